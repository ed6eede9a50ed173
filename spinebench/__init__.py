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
#: Carried by every prediction result, shown by the demo and written into every model card.
DISCLAIMER = ("Research tool, not a diagnosis. These models were trained on small, largely synthetic data; their "
              "outputs must not be used for clinical decisions.")

# ------------------------------------------------------------------------------------------- public API
# Imported on first use, so that ``import spinebench`` stays fast (no torch until a model is wanted).
_API = {
    "list_models": "spinebench.models",
    "create_model": "spinebench.models",
    "model_info": "spinebench.models",
    "load_trained": "spinebench.weights",
    "read_records": "spinebench.weights",
    "TrainedWeights": "spinebench.weights",
    "load_records": "spinebench.data.sources",
    "SpineDataset": "spinebench.data.dataset",
    "load_image": "spinebench.io",
    "Predictor": "spinebench.predict",
    "push_weights": "spinebench.hub",
    "SpinebenchError": "spinebench.errors",
}
__all__ = ["__version__", "LABEL_MAP", "LABEL_NAMES", "FINDINGS", "FINDING_LABELS", "SCOLIOSIS_COBB_DEG",
           "DISCLAIMER", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'spinebench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
