"""The evaluation protocol on hand-checkable cases: counts, AUROC, thresholds, patient bootstrap, detection mAP."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from spinebench.evaluation.detection import DETECTION_KEYS, detection_map
from spinebench.evaluation.metrics import (IMAGE_LEVEL_KEYS, bootstrap_ci, choose_thresholds, evaluate_image_level,
                                           image_scores_from_detections, patient_bootstrap_weights, weighted_auroc)


def _table_case():
    """Implant: TP=3, FN=1, TN=4, FP=2 at threshold 0.5 (10 images); scoliosis all negative."""
    y = np.array([[1, 0]] * 4 + [[0, 0]] * 6)
    p_imp = np.array([0.9, 0.8, 0.7, 0.2,  # positives: 3 found, 1 missed
                      0.1, 0.2, 0.3, 0.4, 0.6, 0.95])  # negatives: 4 right, 2 false alarms
    p = np.column_stack([p_imp, np.full(10, 0.1)])
    return y, p, [f"p{i}" for i in range(10)]


def test_two_by_two_table():
    y, p, pids = _table_case()
    m = evaluate_image_level(y, p, pids, [0.5, 0.5], n_boot=0)
    assert m["implant_sensitivity"] == pytest.approx(3 / 4)
    assert m["implant_specificity"] == pytest.approx(4 / 6)
    assert m["implant_precision"] == pytest.approx(3 / 5)
    assert m["implant_f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert m["implant_accuracy"] == pytest.approx(7 / 10)
    assert (m["implant_n_pos"], m["implant_n_neg"]) == (4, 6)
    assert m["implant_auroc"] == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]))
    # no scoliosis at all: sensitivity and AUROC undefined, specificity 1
    assert math.isnan(m["scoliosis_sensitivity"]) and math.isnan(m["scoliosis_auroc"])
    assert m["scoliosis_specificity"] == 1.0
    # 'any' equals implant here (max prob = implant prob, truth = implant)
    assert m["any_sensitivity"] == m["implant_sensitivity"]
    # exact match: scoliosis always right, so it is implant's accuracy; loss by hand
    assert m["accuracy"] == pytest.approx(0.7)
    pc = np.clip(p, 1e-7, 1 - 1e-7)
    bce = -(y * np.log(pc) + (1 - y) * np.log(1 - pc)).mean()
    assert m["loss"] == pytest.approx(bce)
    assert m["n_images"] == 10 and m["n_patients"] == 10
    assert tuple(m) == IMAGE_LEVEL_KEYS
    assert math.isnan(m["implant_sensitivity_lo"])  # n_boot=0: no CI, key still there


def test_any_is_abnormal_vs_normal():
    y = np.array([[1, 0], [0, 1], [0, 0], [0, 0]])
    p = np.array([[0.9, 0.1], [0.2, 0.3], [0.1, 0.2], [0.05, 0.6]])
    m = evaluate_image_level(y, p, ["a", "b", "c", "d"], [0.5, 0.5], n_boot=0)
    # abnormal: images 0, 1 -> flagged (implant 0.9), missed (0.2 / 0.3); normal: right, false alarm (0.6)
    assert (m["any_sensitivity"], m["any_specificity"]) == (0.5, 0.5) and math.isnan(m["any_threshold"])
    # exact match: image 0 right, 1 wrong (scoliosis missed), 2 right, 3 wrong
    assert m["accuracy"] == 0.5
    assert m["any_auroc"] == 0.75  # ranked by max(p): 0.9, 0.3 against 0.2, 0.6


def test_any_follows_each_findings_own_threshold():
    """An image is abnormal when either finding is flagged at its own threshold (the call the demo shows), not
    when max(p) passes one shared threshold: implant 0.35 >= 0.3 flags image 0 although 0.35 < 0.5."""
    y = np.array([[1, 0], [0, 1], [0, 0]])
    p = np.array([[0.35, 0.1], [0.1, 0.45], [0.25, 0.55]])
    m = evaluate_image_level(y, p, ["a", "b", "c"], [0.3, 0.6], n_boot=0)
    assert (m["implant_sensitivity"], m["scoliosis_sensitivity"]) == (1.0, 0.0)
    assert (m["any_sensitivity"], m["any_specificity"]) == (0.5, 1.0)
    with pytest.raises(ValueError, match="one per finding"):
        evaluate_image_level(y, p, ["a", "b", "c"], [0.3, 0.6, 0.5], n_boot=0)


def test_weighted_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.3
    s = np.round(rng.random(300) * 0.6 + 0.4 * y, 1)  # many ties
    assert weighted_auroc(y, s, np.ones((1, 300)))[0] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    # integer weights = the data set with images repeated
    w = rng.integers(0, 4, 300)
    idx = np.repeat(np.arange(300), w)
    assert weighted_auroc(y, s, w[None])[0] == pytest.approx(roc_auc_score(y[idx], s[idx]), abs=1e-12)
    assert math.isnan(weighted_auroc(np.zeros(5, bool), np.arange(5.0), np.ones((1, 5)))[0])


def test_youden_thresholds():
    # separable, gap contains 0.5 -> 0.5; separable, gap below 0.5 -> the gap's midpoint
    y = np.array([[0, 0], [0, 0], [0, 0], [1, 1], [1, 1]])
    p = np.array([[0.1, 0.05], [0.2, 0.07], [0.3, 0.1], [0.7, 0.2], [0.8, 0.3]])
    for method in ("youden", "balanced"):  # separable: both rules agree
        t = choose_thresholds(y, p, method=method)
        assert t.shape == (2,)  # per finding: 'any' is either finding flagged
        assert t[0] == 0.5 and t[1] == pytest.approx(0.15)
    m = evaluate_image_level(y, p, list("abcde"), t, n_boot=0)
    assert m["implant_sensitivity"] == m["implant_specificity"] == m["scoliosis_sensitivity"] == 1.0
    # a finding absent from validation -> 0.5
    t2 = choose_thresholds(np.array([[0, 0], [1, 0]]), np.array([[0.2, 0.9], [0.8, 0.4]]))
    assert t2[1] == 0.5
    assert np.all(choose_thresholds(y, p, method="fixed") == 0.5)
    with pytest.raises(ValueError):
        choose_thresholds(y, p, method="magic")


def test_youden_not_separable_picks_max_j():
    # positives 0.4, 0.6, 0.9; negatives 0.1, 0.5, 0.7: best J = 2/3 + 2/3 - 1 at t in (0.1, 0.4] or (0.5, 0.6]
    y = np.array([1, 1, 1, 0, 0, 0])
    s = np.array([0.4, 0.6, 0.9, 0.1, 0.5, 0.7])
    t = choose_thresholds(np.column_stack([y, y]), np.column_stack([s, s]), method="youden")
    # candidates: midpoint 0.25 of (0.1, 0.4] and 0.55 of (0.5, 0.6]: 0.55 is closer to 0.5
    assert t[0] == pytest.approx(0.55)


def test_balanced_threshold_takes_the_best_worse_rate_where_youden_buys_specificity():
    # 10 positives, 4 negatives. Youden's best: t in (0.6, 0.65]: sensitivity 0.7, specificity 1.0, J 0.7.
    # The balanced rule's: t in (0.3, 0.35]: sensitivity 0.9, specificity 0.75 (worse rate 0.75 > 0.7; J 0.65)
    pos = [0.2, 0.35, 0.4, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    neg = [0.1, 0.15, 0.3, 0.6]
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))].astype(int)
    s = np.r_[pos, neg]
    yy, ss = np.column_stack([y, y]), np.column_stack([s, s])
    tb = choose_thresholds(yy, ss)  # the default rule
    assert tb[0] == pytest.approx(0.325)
    m = evaluate_image_level(yy, ss, [str(i) for i in range(len(y))], tb, n_boot=0)
    assert m["implant_sensitivity"] == pytest.approx(0.9) and m["implant_specificity"] == pytest.approx(0.75)
    ty = choose_thresholds(yy, ss, method="youden")
    assert ty[0] == pytest.approx(0.625)
    assert min(((s >= ty[0]) & (y == 1)).sum() / 10, ((s < ty[0]) & (y == 0)).sum() / 4) == pytest.approx(0.7)


def test_image_scores_from_detections():
    dets = [{"labels": torch.tensor([1, 1, 2]), "scores": torch.tensor([0.3, 0.8, 0.4])},
            {"labels": torch.zeros(0, dtype=torch.long), "scores": torch.zeros(0)},
            {"labels": np.array([2]), "scores": np.array([0.6])}]
    s = image_scores_from_detections(dets, 3)
    assert np.allclose(s, [[0.8, 0.4], [0.0, 0.0], [0.0, 0.6]])
    with pytest.raises(ValueError):
        image_scores_from_detections(dets, 4)


def test_bootstrap_ci_contains_point_and_is_patient_level():
    rng = np.random.default_rng(0)
    n = 40
    y = np.column_stack([rng.random(n) < 0.5, rng.random(n) < 0.5]).astype(int)
    p = np.clip(0.35 * y + rng.random((n, 2)) * 0.65, 0, 1)
    pids = [f"p{i}" for i in range(n)]
    m = evaluate_image_level(y, p, pids, [0.5, 0.5], n_boot=500, seed=3)
    for key in ("implant_sensitivity", "scoliosis_auroc", "any_specificity", "accuracy", "loss"):
        assert m[f"{key}_lo"] <= m[key] <= m[f"{key}_hi"]
        assert m[f"{key}_lo"] < m[f"{key}_hi"]
    # every patient imaged 5 times: patient-level CIs are unchanged (the same patients are drawn) ...
    rep = np.repeat(np.arange(n), 5)
    m_dup = evaluate_image_level(y[rep], p[rep], [pids[i] for i in rep], [0.5, 0.5], n_boot=500, seed=3)
    for key in ("implant_sensitivity", "scoliosis_auroc", "accuracy"):
        assert m_dup[key] == pytest.approx(m[key])
        assert (m_dup[f"{key}_lo"], m_dup[f"{key}_hi"]) == pytest.approx((m[f"{key}_lo"], m[f"{key}_hi"]))
    # ... while treating the copies as independent images would shrink them (about 1/sqrt(5))
    m_img = evaluate_image_level(y[rep], p[rep], [str(i) for i in range(len(rep))], [0.5, 0.5],
                                 n_boot=500, seed=3)
    width = m["accuracy_hi"] - m["accuracy_lo"]
    assert m_img["accuracy_hi"] - m_img["accuracy_lo"] < 0.7 * width


def test_bootstrap_weights_are_patient_draws():
    pids = ["a", "a", "b", "c", "c", "c"]
    w = patient_bootstrap_weights(pids, n_boot=200, seed=0)
    assert w.shape == (200, 6)
    assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 3] == w[:, 5])  # a patient's images go together
    assert np.all(w[:, [0, 2, 3]].sum(1) == 3)  # 3 patients drawn per resample
    ci = bootstrap_ci(lambda ww: {"mean": ww @ np.arange(6.0) / ww.sum(1)}, pids, n_boot=0)
    assert ci == {}


def test_bootstrap_is_seeded_and_fast():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 2)) < 0.4).astype(int)
    p = rng.random((200, 2))
    pids = [f"p{i // 2}" for i in range(200)]
    start = time.perf_counter()
    a = evaluate_image_level(y, p, pids, [0.5, 0.5], n_boot=1000, seed=7)
    elapsed = time.perf_counter() - start
    b = evaluate_image_level(y, p, pids, [0.5, 0.5], n_boot=1000, seed=7)
    assert a == pytest.approx(b, nan_ok=True)
    assert elapsed < 2.0, f"1000 bootstrap resamples of 200 images took {elapsed:.2f} s"


def test_bad_inputs_are_refused():
    y, p, pids = _table_case()
    with pytest.raises(ValueError):
        evaluate_image_level(y[:, :1], p, pids, [0.5, 0.5])
    with pytest.raises(ValueError):
        evaluate_image_level(y, p, pids[:3], [0.5, 0.5])
    bad = p.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        evaluate_image_level(y, bad, pids, [0.5, 0.5])


# ------------------------------------------------------------------------------------------------ detection
def _box_case(shift: float = 0.0):
    targets = [{"boxes": torch.tensor([[10.0, 10, 50, 50], [60, 20, 90, 120]]), "labels": torch.tensor([1, 2])},
               {"boxes": torch.tensor([[30.0, 40, 70, 90]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]  # a normal image
    preds = [{"boxes": t["boxes"] + shift, "scores": torch.full((len(t["labels"]),), 0.9), "labels": t["labels"]}
             for t in targets]
    return preds, targets


def test_detection_map_perfect_and_shifted():
    preds, targets = _box_case()
    m = detection_map(preds, targets)
    assert set(m) == set(DETECTION_KEYS)
    for key in ("map", "map_50", "map_Lum", "map_sco", "ap50_Lum", "ap50_sco"):
        assert m[key] == pytest.approx(1.0), key
    shifted = detection_map(*_box_case(shift=4.0))  # IoU about 0.7
    assert shifted["map"] < 0.9
    assert shifted["map_50"] == pytest.approx(1.0)  # IoU of the shifted boxes still > 0.5
    assert shifted["map_50"] > shifted["map"]


def test_detection_map_false_positive_and_absent_class():
    preds, targets = _box_case()
    # a confident Lum box on the normal image outranks the real ones: AP drops below 1
    preds[2] = {"boxes": np.array([[5.0, 5, 25, 25]]), "scores": np.array([0.99]), "labels": np.array([1])}
    m = detection_map(preds, targets)
    assert m["ap50_Lum"] < 1.0 and m["ap50_sco"] == pytest.approx(1.0)
    # no scoliosis in the ground truth: its AP is undefined (NaN, not COCO's -1)
    only_lum = [{"boxes": t["boxes"][t["labels"] == 1], "labels": t["labels"][t["labels"] == 1]} for t in targets]
    m2 = detection_map(preds, only_lum)
    assert math.isnan(m2["map_sco"]) and math.isnan(m2["ap50_sco"]) and m2["map_Lum"] > 0


def test_detection_map_bootstrap():
    preds, targets = _box_case(shift=5.0)
    preds, targets = preds * 4, targets * 4
    m = detection_map(preds, targets, patient_ids=[f"p{i // 2}" for i in range(12)], n_boot=20, seed=0)
    assert m["map_lo"] <= m["map"] <= m["map_hi"]
    assert math.isnan(detection_map(preds, targets)["map_lo"])
