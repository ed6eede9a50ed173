"""Scoring of the Cobb-angle landmark models: the AASCE challenge's SMAPE (``spinebench.cobb.smape``), angle errors,
clinical grades and the scoliosis call of the largest measured angle, with bootstrap CIs over patients.

Every Cobb score of the project (run-all, ``evaluate``, benchmarks) is this one function on predicted and
reference landmarks, so a figure in one place is the same figure everywhere.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from spinebench import SCOLIOSIS_COBB_DEG
from spinebench.cobb import ANGLE_NAMES, SEVERITY_GRADES, measured_angles, severity_grade, smape_per_image
from spinebench.errors import SpinebenchError
from spinebench.evaluation.metrics import bootstrap_ci


def score_cobb(pred_landmarks, true_landmarks, true_angles, patient_ids: Sequence[str], n_boot: int = 1000,
               seed: int = 0, image_heights: Sequence[float] | None = None,
               scales: Sequence[float] | None = None, real: Sequence[bool] | None = None,
               looks=None) -> dict:
    """Cobb-angle metrics of predicted landmarks, with 95% bootstrap CIs over patients.

    ``pred_landmarks`` and ``true_landmarks`` are (N, 68, 2) in the same pixels; ``true_angles`` (N, 3) the
    reference PT/MT/TL angles; ``image_heights`` the heights of those images (the AASCE S-curve rule needs it);
    ``scales`` their pixels per original pixel, to report the landmark error in original pixels too.

    Metrics: smape, mae_pt/mt/tl, mae_largest, landmark_mpe_px(_orig), grade_accuracy, scoliosis_sensitivity and
    scoliosis_specificity (largest angle >= 10 degrees, measured vs reference), each with ``<name>_lo/_hi``
    (spinebench.evaluation.metrics.bootstrap_ci over patients); grade_confusion (4x4, rows reference, columns
    predicted, order none/mild/moderate/severe), n_images, n_patients, pred_angles (N, 3).

    ``looks`` (L, N, 68, 2): the landmarks of every look the model took at each film (``pred_landmarks`` the first);
    the angles are the mean of the looks' angles (:func:`spinebench.cobb.mean_of_looks`), the landmark error that of
    ``pred_landmarks``.

    ``real`` (per image: a real radiograph, not a synthetic film) adds ``smape_real`` (+ CI, ``n_real_images``):
    the SMAPE of the real films alone. Why: a hybrid run's test split mixes synthetic films, whose exact and mostly
    small angles a model learns sooner, with real ones; the goal a user checks is the real films' figure
    (H200, paper profile: 6.8% on the synthetic test films, 10.7% on the real ones, 8.8% together).
    """
    pred = np.asarray(pred_landmarks, dtype=np.float64)
    true = np.asarray(true_landmarks, dtype=np.float64)
    ta = np.asarray(true_angles, dtype=np.float64).reshape(-1, 3)
    if not (len(pred) == len(true) == len(ta) == len(patient_ids)):
        raise ValueError("pred_landmarks, true_landmarks, true_angles and patient_ids differ in length")
    n = len(pred)
    if n == 0:
        raise SpinebenchError("score_cobb: nothing to score (no images)")
    lk = pred[None] if looks is None else np.asarray(looks, dtype=np.float64)
    if lk.shape[1:] != pred.shape:
        raise ValueError(f"looks {lk.shape} do not match pred_landmarks {pred.shape}")
    pa = measured_angles(lk, image_heights)
    err = np.linalg.norm(pred - true, axis=-1).mean(1)        # per image mean point error
    sc = np.ones(n) if scales is None else np.asarray(scales, dtype=np.float64)
    p_big, t_big = pa.max(1), ta.max(1)
    g_pred = np.array([SEVERITY_GRADES.index(severity_grade(a)) for a in p_big])
    g_true = np.array([SEVERITY_GRADES.index(severity_grade(a)) for a in t_big])
    t_pos, p_pos = t_big >= SCOLIOSIS_COBB_DEG, p_big >= SCOLIOSIS_COBB_DEG
    # per-image quantities whose (weighted) means are the metrics; sensitivity/specificity are ratios of two
    per_image = {"smape": 100 * smape_per_image(pa, ta),
                 "mae_largest": np.abs(p_big - t_big), "landmark_mpe_px": err, "landmark_mpe_px_orig": err / sc,
                 "grade_accuracy": (g_pred == g_true).astype(np.float64)}
    for k, name in enumerate(ANGLE_NAMES):
        per_image[f"mae_{name}"] = np.abs(pa[:, k] - ta[:, k])

    def stats(w: np.ndarray) -> dict[str, np.ndarray]:
        w = np.asarray(w, dtype=np.float64)
        tot = w.sum(1)
        out = {k: w @ v / tot for k, v in per_image.items()}
        with np.errstate(invalid="ignore", divide="ignore"):
            out["scoliosis_sensitivity"] = (w @ (t_pos & p_pos)) / (w @ t_pos)
            out["scoliosis_specificity"] = (w @ (~t_pos & ~p_pos)) / (w @ ~t_pos)
        return out

    point = {k: float(v[0]) for k, v in stats(np.ones((1, n))).items()}
    cis = bootstrap_ci(stats, list(patient_ids), n_boot=n_boot, seed=seed)
    metrics: dict = {}
    for key, value in point.items():
        lo, hi = cis.get(key, (math.nan, math.nan))
        metrics.update({key: value, f"{key}_lo": lo, f"{key}_hi": hi})
    is_real = np.zeros(n, dtype=bool) if real is None else np.asarray(real, dtype=bool)
    if is_real.any():
        idx = np.flatnonzero(is_real)
        sub = score_cobb(pred[idx], true[idx], ta[idx], [patient_ids[i] for i in idx], n_boot=n_boot, seed=seed,
                         image_heights=None if image_heights is None else [image_heights[i] for i in idx],
                         looks=lk[:, idx])
        metrics.update({"smape_real": sub["smape"], "smape_real_lo": sub["smape_lo"],
                        "smape_real_hi": sub["smape_hi"], "n_real_images": len(idx)})
    conf = np.zeros((4, 4), dtype=int)
    np.add.at(conf, (g_true, g_pred), 1)
    metrics.update({"grade_confusion": conf.tolist(), "grade_order": list(SEVERITY_GRADES), "n_images": n,
                    "n_patients": len(set(patient_ids)), "n_boot": n_boot, "pred_angles": pa.round(3).tolist()})
    return metrics


