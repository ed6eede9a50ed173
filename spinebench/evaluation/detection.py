"""Detection mAP for the detectors: COCO mAP@[.5:.95] and AP@0.5, overall and per class.

Computed by torchmetrics' ``MeanAveragePrecision`` with the pycocotools backend, i.e. the reference COCO
evaluation, not a re-implementation. Images without ground-truth boxes still count (their boxes are false
positives). A class absent from the ground truth has no defined AP: it is NaN here (COCO's -1 would average
in as a number), and the overall mAP averages the classes that are present, as COCO does.
"""

from __future__ import annotations

import math
import warnings
from typing import Mapping, Sequence

import numpy as np

from spinebench import LABEL_MAP
from spinebench.evaluation.metrics import bootstrap_ci

#: Keys :func:`detection_map` returns, in the leaderboard's column order.
DETECTION_KEYS = (
    "map", "map_lo", "map_hi", "map_50", "map_50_lo", "map_50_hi",
    *(f"map_{n}" for n in LABEL_MAP), *(f"ap50_{n}" for n in LABEL_MAP),
)


def _as_tensor(x, dtype, shape_tail=()):
    import torch

    t = torch.as_tensor(np.asarray(x.detach().cpu() if hasattr(x, "detach") else x), dtype=dtype)
    return t.reshape(-1, *shape_tail)


def _prepare(preds: Sequence[Mapping], targets: Sequence[Mapping]) -> tuple[list[dict], list[dict]]:
    import torch

    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    p_out, t_out = [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        pb = _as_tensor(p.get("boxes", []), torch.float32, (4,))
        ps = _as_tensor(p.get("scores", []), torch.float32)
        pl = _as_tensor(p.get("labels", []), torch.int64)
        tb = _as_tensor(t.get("boxes", []), torch.float32, (4,))
        tl = _as_tensor(t.get("labels", []), torch.int64)
        if not (len(pb) == len(ps) == len(pl)) or len(tb) != len(tl):
            raise ValueError(f"image {i}: boxes, scores and labels differ in length")
        p_out.append({"boxes": pb, "scores": ps, "labels": pl})
        t_out.append({"boxes": tb, "labels": tl})
    return p_out, t_out


def _compute(preds: list[dict], targets: list[dict], **kwargs) -> dict:
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # e.g. "no ground truth": we turn -1 into NaN ourselves
        metric.update(preds, targets)
        return metric.compute()


def _num(v) -> float:
    v = float(v)
    return math.nan if v < 0 else v  # COCO writes -1 for "undefined"


def _per_class(result: dict) -> dict[int, float]:
    classes = result["classes"].reshape(-1).tolist()
    values = result["map_per_class"].reshape(-1).tolist()
    return {int(c): _num(v) for c, v in zip(classes, values)}


def detection_map(preds: Sequence[Mapping], targets: Sequence[Mapping], patient_ids: Sequence | None = None,
                  n_boot: int = 0, seed: int = 0) -> dict:
    """COCO detection metrics of one detector on one split.

    ``preds[i]``: boxes (K, 4) xyxy pixels, scores (K,), labels (K,) (1 = Lum, 2 = sco); ``targets[i]``:
    boxes, labels. Tensors or arrays. Returns the keys of :data:`DETECTION_KEYS`: ``map`` (mAP@[.5:.95]),
    ``map_50`` (AP@0.5), per class ``map_<name>`` and ``ap50_<name>``; ``map_lo/hi`` and ``map_50_lo/hi``
    are 95% CIs from a bootstrap over patients when ``n_boot`` > 0 and ``patient_ids`` are given (each
    resample re-runs the COCO evaluation: about 25 ms per 100 images), NaN otherwise.
    """
    p, t = _prepare(preds, targets)
    out = dict.fromkeys(DETECTION_KEYS, math.nan)
    if not p:
        return out
    full = _compute(p, t, class_metrics=True)
    out["map"], out["map_50"] = _num(full["map"]), _num(full["map_50"])
    per_map = _per_class(full)
    per_50 = _per_class(_compute(p, t, class_metrics=True, iou_thresholds=[0.5]))
    for name, label in LABEL_MAP.items():
        out[f"map_{name}"] = per_map.get(label, math.nan)
        out[f"ap50_{name}"] = per_50.get(label, math.nan)
    if n_boot > 0 and patient_ids is not None:
        if len(patient_ids) != len(p):
            raise ValueError(f"{len(patient_ids)} patient ids for {len(p)} images")

        def stat(weights: np.ndarray) -> dict[str, np.ndarray]:
            maps, maps50 = [], []
            for w in weights:
                idx = np.repeat(np.arange(len(p)), w)  # a patient drawn k times brings its images k times
                r = _compute([p[i] for i in idx], [t[i] for i in idx])
                maps.append(_num(r["map"]))
                maps50.append(_num(r["map_50"]))
            return {"map": np.asarray(maps), "map_50": np.asarray(maps50)}

        for name, (lo, hi) in bootstrap_ci(stat, patient_ids, n_boot=n_boot, seed=seed).items():
            out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
    return out

