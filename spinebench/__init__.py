"""spinebench: find lumbar implants and diagnose scoliosis on spine X-rays, and benchmark the models that do it.

Reimplements and extends Le Van et al., "Detecting Lumbar Implant and Diagnosing Scoliosis from Vietnamese
X-Ray Imaging Using the Pre-Trained API Models and Transfer Learning" (CMC, 2020).

Label map (the paper's): ``Lum`` = 1 (lumbar / surgical implant), ``sco`` = 2 (scoliosis); images with
neither are "normal". Class 0 is the detectors' background.
"""

__version__ = "0.1.0"

#: The paper's label map. Detector class ids; classifier outputs follow FINDINGS order.
LABEL_MAP = {"Lum": 1, "sco": 2}
LABEL_NAMES = {v: k for k, v in LABEL_MAP.items()}
#: Image-level findings, in the order of every classifier's two sigmoid outputs.
FINDINGS = ("implant", "scoliosis")
#: The detector class that localises each finding.
FINDING_LABELS = {"implant": LABEL_MAP["Lum"], "scoliosis": LABEL_MAP["sco"]}
#: A largest Cobb angle at or above this (degrees) counts as scoliosis.
SCOLIOSIS_COBB_DEG = 10.0
