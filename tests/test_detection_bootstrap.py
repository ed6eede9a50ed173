"""Patient-bootstrap CIs of detection mAP: COCO's per-image matching once, then its accumulation with image weights.

The fast path must give COCO's own numbers: torchmetrics' mAP with all weights 1, and COCO re-run on the
explicitly repeated images for a resample.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spinebench.evaluation.detection import _compute, _coco_matching, _num, _prepare, _weighted_map, detection_map
from spinebench.evaluation.metrics import patient_bootstrap_weights


def _random_case(n_images: int = 8, n_boxes: int = 40, seed: int = 0, tied_scores: bool = False):
    """Two classes; near-misses and hits around the ground truth plus random boxes with random scores. Image 0
    has no ground truth, image 1 no detections, image 2 more than COCO's 100 detections of one class; other images
    may lack the ground truth of a class. ``tied_scores``: scores from four values, so that true and false
    positives tie within an image and class as well as across images."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for i in range(n_images):
        gt = []
        for label in (1, 2):
            for _ in range(0 if i == 0 else rng.integers(0, 3)):
                x, y, w, h = *rng.uniform(0, 300, 2), *rng.uniform(30, 120, 2)
                gt.append([x, y, x + w, y + h, label])
        gt = np.array(gt, dtype=np.float64).reshape(-1, 5)
        k = 0 if i == 1 else 110 if i == 2 else n_boxes
        boxes, labels = [], []
        for _ in range(k):
            if len(gt) and rng.random() < 0.4:  # around a ground truth box: IoU from about 0.3 to 1
                g = gt[rng.integers(len(gt))]
                boxes.append(g[:4] + rng.normal(0, 10, 4))
                labels.append(int(g[4]))
            else:
                x, y, w, h = *rng.uniform(0, 300, 2), *rng.uniform(20, 120, 2)
                boxes.append([x, y, x + w, y + h])
                labels.append(1 if i == 2 else int(rng.integers(1, 3)))
        scores = rng.choice([0.25, 0.5, 0.75, 1.0], k) if tied_scores else rng.random(k)
        preds.append({"boxes": torch.tensor(np.array(boxes), dtype=torch.float32).reshape(-1, 4),
                      "scores": torch.tensor(scores, dtype=torch.float32),
                      "labels": torch.tensor(labels, dtype=torch.int64)})
        targets.append({"boxes": torch.tensor(gt[:, :4], dtype=torch.float32),
                        "labels": torch.tensor(gt[:, 4].astype(np.int64))})
    return _prepare(preds, targets)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_unit_weights_give_torchmetrics_map(seed):
    p, t = _random_case(seed=seed)
    full = _compute(p, t)
    fast = _weighted_map(_coco_matching(p, t), np.ones((1, len(p))))
    assert fast["map"][0] == pytest.approx(_num(full["map"]), abs=1e-6)
    assert fast["map_50"][0] == pytest.approx(_num(full["map_50"]), abs=1e-6)
    assert 0 < fast["map"][0] < fast["map_50"][0] < 1  # a case with something to get wrong


@pytest.mark.parametrize("seed,tied", [(3, False), (4, False), (5, True)])
def test_resample_equals_coco_on_the_repeated_images(seed, tied):
    p, t = _random_case(seed=seed, tied_scores=tied)
    n = len(p)
    rng = np.random.default_rng(seed)
    weights = np.vstack([rng.multinomial(n, np.full(n, 1 / n), size=3),
                         np.eye(n, dtype=int)[0] * 3])  # only the image without ground truth: undefined
    fast = _weighted_map(_coco_matching(p, t), weights)
    for b, w in enumerate(weights):
        idx = np.repeat(np.arange(n), w)  # an image drawn k times, k times
        slow = _compute([p[i] for i in idx], [t[i] for i in idx])
        for key in ("map", "map_50"):
            want = _num(slow[key])
            if math.isnan(want):
                assert math.isnan(fast[key][b]), (b, key)
            else:
                assert fast[key][b] == pytest.approx(want, abs=1e-6), (b, key)
    assert np.isnan(fast["map"][-1]) and np.isfinite(fast["map"][:-1]).all()


def test_tied_true_and_false_positives_of_one_image_repeat_as_a_block():
    """An image drawn twice brings its tied hit and miss as hit, miss, hit, miss (COCO's stable sort over the
    repeated images), not hit, hit, miss, miss: AP@0.5 0.297, not 0.365."""
    gt = torch.tensor([[10.0, 10, 50, 50], [100, 100, 150, 150]])
    targets = [{"boxes": gt, "labels": torch.tensor([1, 1])}, {"boxes": gt[:1], "labels": torch.tensor([1])}]
    preds = [{"boxes": torch.tensor([[10.0, 10, 50, 50], [200, 200, 240, 240]]), "scores": torch.tensor([0.8, 0.8]),
              "labels": torch.tensor([1, 1])},
             {"boxes": torch.tensor([[300.0, 300, 340, 340], [10, 10, 50, 50]]), "scores": torch.tensor([0.9, 0.5]),
              "labels": torch.tensor([1, 1])}]
    p, t = _prepare(preds, targets)
    fast = _weighted_map(_coco_matching(p, t), np.array([[1, 1], [2, 1], [3, 1], [0, 2]]))
    for b, w in enumerate([[1, 1], [2, 1], [3, 1], [0, 2]]):
        idx = np.repeat([0, 1], w)
        slow = _compute([p[i] for i in idx], [t[i] for i in idx])
        assert fast["map_50"][b] == pytest.approx(float(slow["map_50"]), abs=1e-6), w
        assert fast["map"][b] == pytest.approx(float(slow["map"]), abs=1e-6), w
    assert fast["map_50"][1] == pytest.approx(30 / 101)


def test_detection_map_cis_bracket_the_point_estimate():
    p, t = _random_case(n_images=12, seed=6)
    pids = [f"p{i // 2}" for i in range(len(p))]
    m = detection_map(p, t, patient_ids=pids, n_boot=200, seed=0)
    for key in ("map", "map_50"):
        assert np.isfinite([m[f"{key}_lo"], m[f"{key}_hi"]]).all(), key
        assert m[f"{key}_lo"] <= m[key] <= m[f"{key}_hi"], key
        assert m[f"{key}_lo"] < m[f"{key}_hi"], key
    again = detection_map(p, t, patient_ids=pids, n_boot=200, seed=0)
    assert again == pytest.approx(m, nan_ok=True)  # seeded
    plain = detection_map(p, t, patient_ids=pids, n_boot=0)
    assert all(math.isnan(plain[k]) for k in ("map_lo", "map_hi", "map_50_lo", "map_50_hi"))
    assert plain["map"] == m["map"] and plain["map_50"] == m["map_50"]


def test_detection_metrics_bootstraps_the_kept_images_by_patient():
    from spinebench.tasks.detection import detection_metrics

    p, t = _random_case(n_images=10, seed=7)
    labels = np.array([[float((x["labels"] == 1).any()), float((x["labels"] == 2).any())] for x in t])
    labels[0, 0] = 1.0  # image 0 has no boxes: now an implant without its box, left out
    pred = {"detections": p, "targets": t, "labels": labels, "patient_ids": [f"p{i // 2}" for i in range(len(p))]}
    m = detection_metrics(pred, n_boot=100, seed=1)
    assert m["map"] == pytest.approx(detection_map(p[1:], t[1:])["map"])
    assert m["map_lo"] <= m["map"] <= m["map_hi"] and m["map_50_lo"] <= m["map_50"] <= m["map_50_hi"]
    assert math.isnan(detection_metrics(pred)["map_lo"])


def test_a_class_without_any_detection_is_scored_and_bootstrapped():
    """An undertrained detector predicts no box of a class at all (the one-epoch run-all test's did): that class's
    AP is 0 where it has ground truth, in the point estimate and in every resample alike."""
    p, t = _random_case(seed=9)
    for item in p:
        keep = item["labels"] == 1
        item.update({k: v[keep] for k, v in item.items()})
    full = _compute(p, t)
    fast = _weighted_map(_coco_matching(p, t), np.ones((1, len(p))))
    assert fast["map_50"][0] == pytest.approx(_num(full["map_50"]), abs=1e-6) and fast["map_50"][0] > 0
    out = detection_map(p, t, patient_ids=[f"p{i // 2}" for i in range(len(p))], n_boot=50, seed=0)
    assert out["map_50_lo"] <= out["map_50"] <= out["map_50_hi"]


def test_bootstrap_at_the_quick_runs_scale():
    """300 resamples of 84 images x 100 boxes (the quick run's test split and box count): the matching once plus
    300 weighted accumulations, finite everywhere (re-running COCO per resample took ~150 s on 2 CPU cores)."""
    p, t = _random_case(n_images=84, n_boxes=100, seed=8)
    weights = patient_bootstrap_weights([f"p{i // 2}" for i in range(84)], n_boot=300, seed=0)
    out = _weighted_map(_coco_matching(p, t), weights)
    assert np.isfinite(out["map"]).all() and np.isfinite(out["map_50"]).all()
