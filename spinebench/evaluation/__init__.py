"""The shared evaluation protocol: image-level metrics with patient-bootstrap CIs, detection mAP, result rows.

Importing this package does not import torch (detection imports it when first called), so reading a
leaderboard stays fast.
"""

from spinebench.evaluation.detection import DETECTION_KEYS, detection_map
from spinebench.evaluation.metrics import (IMAGE_LEVEL_KEYS, bootstrap_ci, choose_thresholds, evaluate_image_level,
                                           image_scores_from_detections, patient_bootstrap_weights, weighted_auroc)
from spinebench.evaluation.results import (COBB_KEYS, RESULT_COLUMNS, append_rows, error_row, git_commit, make_row,
                                           read_rows, write_json)

__all__ = ["COBB_KEYS", "DETECTION_KEYS", "IMAGE_LEVEL_KEYS", "RESULT_COLUMNS", "append_rows", "bootstrap_ci",
           "choose_thresholds", "detection_map", "error_row", "evaluate_image_level", "git_commit",
           "image_scores_from_detections", "make_row", "patient_bootstrap_weights", "read_rows", "weighted_auroc",
           "write_json"]
