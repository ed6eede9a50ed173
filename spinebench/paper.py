"""The paper's reported numbers as data, so tables and figures can put our results beside them.

Le Van, Puri, Thao, Le (2020), Tables 5 (detection API) and 6 (transfer learning), and its data table.
Percentages are stored as fractions. The paper's detection "specificity" is what it calls "sensitivity for
people without these problems"; both approaches' sensitivity/specificity are for abnormal (either finding)
vs normal images, i.e. our ``any_sensitivity`` / ``any_specificity``. Its accuracy (Table 6 only) is a
validation accuracy and its loss a training-framework loss (TF OD API "total loss" for the detectors), so only
sensitivity and specificity compare directly.
"""

from __future__ import annotations

CITATION = (
    "Le Van, C., Puri, V., Thao, N. T., Le, D.-N. (2020). Detecting Lumbar Implant and Diagnosing Scoliosis "
    "from Vietnamese X-Ray Imaging Using the Pre-Trained API Models and Transfer Learning. "
    "Computers, Materials & Continua."
)

#: Input side the paper resized every image to (pixels).
PAPER_INPUT_SIZE = (48, 48)

#: Tables 5 and 6, one dict per model, keyed by our registry name.
PAPER_RESULTS: list[dict] = [
    {"model": "det_faster_rcnn_inception_v2", "paper_name": "faster_rcnn_inception_v2_coco",
     "approach": "detection api", "table": 5, "sensitivity": 0.81, "specificity": 0.94, "accuracy": None,
     "loss": 2.274, "training": "4000 steps"},
    {"model": "det_faster_rcnn_inception_resnet_v2", "paper_name": "faster_rcnn_inception_resnet_v2_atrous_oidv2",
     "approach": "detection api", "table": 5, "sensitivity": 0.79, "specificity": 0.88, "accuracy": None,
     "loss": 1.465, "training": "4000 steps"},
    {"model": "cls_resnet50", "paper_name": "ResNet", "approach": "transfer learning", "table": 6,
     "sensitivity": 0.91, "specificity": 0.89, "accuracy": 0.825, "loss": 0.252, "training": "50 epochs"},
    {"model": "cls_densenet121", "paper_name": "DenseNet", "approach": "transfer learning", "table": 6,
     "sensitivity": 0.97, "specificity": 0.98, "accuracy": 0.935, "loss": 0.127, "training": "50 epochs"},
    {"model": "cls_squeezenet1_1", "paper_name": "SqueezeNet", "approach": "transfer learning", "table": 6,
     "sensitivity": 0.89, "specificity": 0.85, "accuracy": 0.815, "loss": 0.571, "training": "50 epochs"},
    {"model": "cls_inception_v3", "paper_name": "InceptionV3", "approach": "transfer learning", "table": 6,
     "sensitivity": 0.94, "specificity": 0.95, "accuracy": 0.875, "loss": 0.227, "training": "50 epochs"},
]

#: The paper's data table: 598 images split 70/15/15 (its order: train/test/validation).
PAPER_DATA: list[dict] = [
    {"source": "Vietnamese hospital X-rays (DICOM, private)", "modality": "X-ray",
     "images": 200, "train": 140, "test": 30, "val": 30},
    {"source": "Lumbar Spine MRI Dataset (Sudirman et al. 2019, Mendeley), 2-3 slices per study as DICOM",
     "modality": "MRI", "images": 300, "train": 210, "test": 45, "val": 45},
    {"source": "AASCE 2019 challenge (SpineWeb Dataset 16) scoliosis X-rays", "modality": "X-ray",
     "images": 98, "train": 68, "test": 15, "val": 15},
]
PAPER_TOTAL_IMAGES = sum(d["images"] for d in PAPER_DATA)


def paper_row(model: str) -> dict | None:
    """The paper's numbers for one of our registered models (a copy), or None if the paper has no such model."""
    for row in PAPER_RESULTS:
        if row["model"] == model:
            return dict(row)
    return None
