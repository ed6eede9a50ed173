"""What the paper's six models share: two image-level findings, selected and scored by the same protocol.

Validation is the image-level binary cross-entropy of the two findings' probabilities (sigmoid outputs for the
classifiers, the highest box score per class for the detectors), so all six models are selected by the same
criterion; the decision thresholds are chosen on validation and applied unchanged to test.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from spinebench import FINDINGS
from spinebench.engine.device import autocast
from spinebench.evaluation.results import PREDICTION_COLUMNS
from spinebench.tasks.base import Task, auroc, bce_from_probs, eval_loader


class ImageLevelTask(Task):
    """Base of the classification and detection tasks: probabilities of the two findings per image."""

    #: predictions run at this batch size (None: the caller's)
    predict_batch_size: int | None = None
    thresholds = True
    #: whether predictions carry boxes (``pred["detections"]``)
    boxes: bool = False

    def _infer(self, model, batch: dict, device) -> tuple[np.ndarray | None, list[dict] | None]:
        """(probabilities (B, 2) or None, detections or None) of one in-order batch.

        Runs under :func:`spinebench.engine.device.autocast`: outputs may be bf16, so cast (``.float()``) before
        ``.numpy()``.
        """
        raise NotImplementedError

    def predict_batches(self, model, ds, batch_size: int) -> list[list[int]]:
        """The dataset indices of each prediction batch: consecutive runs of ``batch_size`` (a task whose batch
        result depends on what is batched together groups them; ``predict`` returns the dataset's order anyway)."""
        return [list(range(i, min(i + batch_size, len(ds)))) for i in range(0, len(ds), batch_size)]

    def _probs(self, probs: list, dets: list, n: int) -> np.ndarray:
        return np.concatenate(probs) if probs else np.zeros((0, len(FINDINGS)))

    @torch.inference_mode()
    def predict(self, model, ds, device, batch_size: int = 16, progress: bool = False, num_workers: int = 0) -> dict:
        """Image-level probabilities (N, 2); boxes too for detectors.

        Returns {"probs": ndarray (N, 2), "detections": list[dict] | None (boxes in the dataset's image pixels),
        "image_ids", "patient_ids", "labels": ndarray (N, 2), "targets": list[dict]}.
        """
        model.eval()
        batches = self.predict_batches(model, ds, self.predict_batch_size or batch_size)
        loader = eval_loader(ds, batches, num_workers, device)
        probs, dets, ids, pids, labels, targets = [], [], [], [], [], []
        it = loader
        if progress:
            from tqdm.auto import tqdm
            it = tqdm(loader, desc="predict", leave=False)
        for batch in it:
            with autocast(device):
                p, d = self._infer(model, batch, device)
            if p is not None:
                probs.append(p)
            if d is not None:
                dets.extend(d)
            ids.extend(batch["image_id"])
            pids.extend(batch["patient_id"])
            labels.append(batch["labels"].numpy())
            targets.extend({"boxes": b, "labels": l} for b, l in zip(batch["boxes"], batch["box_labels"]))
        # back to the dataset's order (batches may group images out of order)
        order = np.argsort([i for b in batches for i in b], kind="stable")
        pick = lambda xs: [xs[i] for i in order]  # noqa: E731
        p = np.asarray(self._probs(probs, dets, len(ids)), dtype=np.float64)
        return {"probs": p[order] if len(p) else p, "detections": pick(dets) if self.boxes else None,
                "image_ids": pick(ids), "patient_ids": pick(pids),
                "labels": np.concatenate(labels)[order] if labels else np.zeros((0, len(FINDINGS))),
                "targets": pick(targets)}

    def validate(self, model, val, device, settings) -> tuple[dict, dict]:
        pred = self.predict(model, val, device, batch_size=settings.batch_size)
        y, p = pred["labels"], pred["probs"]
        return ({"val_loss": bce_from_probs(y, p), "val_auroc_implant": auroc(y[:, 0], p[:, 0]),
                 "val_auroc_scoliosis": auroc(y[:, 1], p[:, 1])}, pred)

    def score(self, val_pred: dict, test_pred: dict, n_boot: int, seed: int) -> dict:
        """Thresholds chosen on validation, applied unchanged to test (``spinebench.evaluation.metrics``)."""
        from spinebench.evaluation.metrics import choose_thresholds

        thresholds = np.asarray(choose_thresholds(val_pred["labels"], val_pred["probs"])).tolist()
        return {"thresholds": thresholds, "metrics": self.score_at(test_pred, thresholds, n_boot, seed)}

    def score_at(self, pred: dict, thresholds, n_boot: int, seed: int) -> dict:
        from spinebench.evaluation.metrics import evaluate_image_level

        return evaluate_image_level(pred["labels"], pred["probs"], pred["patient_ids"], thresholds, n_boot=n_boot,
                                    seed=seed)

    def write_predictions(self, path, pred: dict, scored: dict, ds) -> None:
        thresholds = scored["thresholds"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(PREDICTION_COLUMNS)
            for i, iid in enumerate(pred["image_ids"]):
                row = [iid, pred["patient_ids"][i]]
                for j, _ in enumerate(FINDINGS):
                    p = float(pred["probs"][i, j])
                    row += [int(pred["labels"][i, j]), f"{p:.6f}", int(p >= thresholds[j])]
                w.writerow(row)
