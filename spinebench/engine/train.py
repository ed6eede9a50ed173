"""Training and prediction for every registered model: one loop per task, plain arguments, resumable.

The loop follows torchvision's reference scripts: linear warm-up then cosine decay, a checkpoint after every
epoch (model, optimizer, scheduler, epoch, best weights, history, RNG), early stopping on the validation split, and
a hard stop on a non-finite loss. What is monitored is the same for every model: the image-level binary
cross-entropy on validation, computed from sigmoid outputs (classifiers) or from the highest box score per class
(detectors), so all six models are selected by the same criterion.
"""

from __future__ import annotations

import csv
import functools
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from spinebench.data.dataset import SpineDataset, collate_dicts
from spinebench.data.transforms import ClassifierTransform, DetectorTransform
from spinebench.engine.device import autocast, cudnn_autotune, rng_state, set_rng_state
from spinebench.errors import SpinebenchError

log = logging.getLogger(__name__)


class NonFiniteLossError(SpinebenchError):
    """Training diverged; the model becomes an error row and the other models go on."""


@dataclass
class TrainSettings:
    """Hyper-parameters of one model's training (a profile fills them; see spinebench.engine.profiles)."""

    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    patience: int = 5
    image_size: tuple[int, int] | None = None  # classifiers: (H, W); None = the model's default
    max_steps_per_epoch: int | None = None     # caps an epoch (quick CPU profile)
    aux_weight: float = 0.4                    # Inception-v3 auxiliary logits, as torchvision's reference
    num_workers: int = 0
    val_every: int = 1                         # validate every N epochs; 0 = only after the last epoch (quick CPU)
    checkpoint_every_s: float = 0.0            # write the checkpoint when this long has passed since the last one
                                               # (and after the last epoch); 0 = after every epoch
    final_checkpoint: bool = True              # also after the last epoch (run-all turns it off when it deletes
                                               # a finished model's checkpoint anyway)
    extra: dict = field(default_factory=dict)


def _bce_from_probs(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def _task(model) -> str:
    return model.default_cfg["task"]


def _shape_aware(fn: Callable) -> Callable:
    """Run ``fn(model, ...)`` without cuDNN autotuning when ``model`` is a detector (variable input shapes)."""
    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        with cudnn_autotune(_task(model) != "detection"):
            return fn(model, *args, **kwargs)
    return wrapper


def _targets(batch: dict, device) -> list[dict]:
    return [{"boxes": b.to(device), "labels": l.to(device)} for b, l in zip(batch["boxes"], batch["box_labels"])]


def _make_loader(ds: SpineDataset, batch_size: int, shuffle: bool, seed: int, epoch: int, num_workers: int,
                 device) -> DataLoader:
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    ds.set_epoch(epoch)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g, collate_fn=collate_dicts,
                      num_workers=num_workers, pin_memory=device.type == "cuda",
                      persistent_workers=False)


def transforms_for(model, image_size: tuple[int, int] | None, train: bool) -> Callable:
    """The item transform a model trains or predicts with (classifiers: fixed size; detectors: their own)."""
    if _task(model) == "detection":
        return DetectorTransform(train=train)
    size = tuple(image_size) if image_size else tuple(model.default_cfg["input_size"])
    return ClassifierTransform(size, train=train)


@_shape_aware
@torch.inference_mode()
def predict(model, ds: SpineDataset, device, batch_size: int = 16, num_workers: int = 0,
            progress: bool = False) -> dict:
    """Image-level probabilities (N, 2) for every model; boxes too for detectors.

    Returns {"probs": ndarray (N, 2), "detections": list[dict] | None (boxes in the dataset's image pixels),
    "image_ids", "patient_ids", "labels": ndarray (N, 2), "targets": list[dict]}.
    """
    from spinebench.evaluation.metrics import image_scores_from_detections

    model.eval()
    is_det = _task(model) == "detection"
    loader = _make_loader(ds, 1 if is_det else batch_size, False, 0, 0, num_workers, device)
    probs, dets, ids, pids, labels, targets = [], [], [], [], [], []
    it = loader
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(loader, desc="predict", leave=False)
    for batch in it:
        with autocast(device):
            if is_det:
                out = model([im.to(device) for im in batch["image"]])
                out = [{k: v.float().cpu() for k, v in o.items()} for o in out]
                dets.extend(out)
            else:
                x = batch["image"].to(device)
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                probs.append(torch.sigmoid(model(x).float()).cpu().numpy())
        ids.extend(batch["image_id"])
        pids.extend(batch["patient_id"])
        labels.append(batch["labels"].numpy())
        targets.extend({"boxes": b, "labels": l} for b, l in zip(batch["boxes"], batch["box_labels"]))
    p = image_scores_from_detections(dets, len(ids)) if is_det else np.concatenate(probs) if probs else np.zeros((0, 2))
    return {"probs": np.asarray(p, dtype=np.float64), "detections": dets if is_det else None, "image_ids": ids,
            "patient_ids": pids, "labels": np.concatenate(labels) if labels else np.zeros((0, 2)),
            "targets": targets}


def _pos_weight(ds: SpineDataset) -> torch.Tensor:
    """Class-imbalance weights for the two findings: negatives / positives, clipped to [0.25, 10]."""
    y = np.array([[r["implant"], r["scoliosis"]] for r in ds.records], dtype=np.float64)
    pos = y.sum(0)
    neg = len(y) - pos
    return torch.tensor(np.clip(neg / np.maximum(pos, 1), 0.25, 10.0), dtype=torch.float32)


def _balanced_sampler_weights(ds: SpineDataset) -> torch.Tensor:
    """Detectors: oversample images with boxes of a rare class (they cannot use a pos_weight)."""
    y = np.array([[r["implant"], r["scoliosis"]] for r in ds.records], dtype=np.float64)
    freq = np.maximum(y.mean(0), 1e-3)
    w = 1.0 + (y / freq).max(1)
    return torch.tensor(w / w.sum(), dtype=torch.float64)


def _schedule(optimizer, total_steps: int, warmup_steps: int):
    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


@_shape_aware
def train_model(model, train_ds: SpineDataset, val_ds: SpineDataset, *, settings: TrainSettings, device,
                seed: int, checkpoint_path: str | os.PathLike | None = None, resume: bool = False,
                log_path: str | os.PathLike | None = None, progress: bool = True,
                ddp_rank: int = 0, ddp_world: int = 1, on_epoch_end: Callable[[dict], None] | None = None) -> dict:
    """Train ``model`` in place and load its best weights (lowest validation image-level BCE) at the end.

    Returns {"val_pred": the best epoch's validation predictions (None after a resume that skipped it),
    "history": [per-epoch dicts], "best_epoch", "epochs_run", "train_seconds", "stopped_early",
    "train_loss" (last epoch's mean total loss, the paper's "total loss" for the detectors)}.
    Raises NonFiniteLossError when a loss is NaN/inf. ``on_epoch_end(row)`` is called after each epoch's
    checkpoint is written (progress displays; tests use it to kill a run midway).
    """
    s = settings
    task = _task(model)
    model.to(device)
    if device.type == "cuda" and task != "detection":
        model.to(memory_format=torch.channels_last)
    tr = train_ds.with_transform(transforms_for(model, s.image_size, train=True))
    va = val_ds.with_transform(transforms_for(model, s.image_size, train=False))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    bs = s.batch_size
    steps_per_epoch = max(1, math.ceil(len(tr) / (bs * ddp_world)))
    if s.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, s.max_steps_per_epoch)
    scheduler = _schedule(optimizer, s.epochs * steps_per_epoch, int(s.warmup_epochs * steps_per_epoch))
    pos_weight = _pos_weight(train_ds).to(device)
    history: list[dict] = []
    start_epoch, best_loss, best_epoch, bad_epochs, best_state = 0, math.inf, -1, 0, None
    best_val = None  # the best epoch's validation predictions: thresholds are chosen on them, no second pass
    elapsed = 0.0
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    last_write = time.perf_counter()
    state = restore_checkpoint(ckpt, model, optimizer, scheduler) if resume else None
    if state is not None:
        start_epoch, best_loss, best_epoch = state["epoch"] + 1, state["best_loss"], state["best_epoch"]
        bad_epochs, best_state, history = state["bad_epochs"], state["best_state"], state["history"]
        elapsed = state["train_seconds"]
    net = model
    if ddp_world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    epoch_bar = None
    if progress and ddp_rank == 0:
        from tqdm.auto import tqdm
        epoch_bar = tqdm(total=s.epochs, initial=start_epoch, desc=model.default_cfg["name"], unit="epoch",
                         leave=False)
    stopped_early = False
    for epoch in range(start_epoch, s.epochs):
        if bad_epochs >= s.patience:
            stopped_early = True
            break
        t0 = time.perf_counter()
        net.train()
        loader = _epoch_loader(tr, task, bs, seed, epoch, s.num_workers, device, ddp_rank, ddp_world)
        total, n = 0.0, 0
        for step, batch in enumerate(loader):
            if step >= steps_per_epoch:
                break
            with autocast(device):
                if task == "detection":
                    losses = net([im.to(device, non_blocking=True) for im in batch["image"]], _targets(batch, device))
                    loss = sum(losses.values())
                else:
                    x = batch["image"].to(device, non_blocking=True)
                    if device.type == "cuda":
                        x = x.contiguous(memory_format=torch.channels_last)
                    y = batch["labels"].to(device)
                    out = net(x)
                    if isinstance(out, (tuple, list)):  # inception_v3 in train mode: (logits, aux_logits)
                        loss = F.binary_cross_entropy_with_logits(out[0].float(), y, pos_weight=pos_weight) + \
                            s.aux_weight * F.binary_cross_entropy_with_logits(out[1].float(), y, pos_weight=pos_weight)
                    else:
                        loss = F.binary_cross_entropy_with_logits(out.float(), y, pos_weight=pos_weight)
            optimizer_step(model, loss, params, optimizer, scheduler, epoch, step)
            total += float(loss.detach()) * len(batch["image_id"])
            n += len(batch["image_id"])
        train_loss = total / max(1, n)
        last = epoch + 1 == s.epochs
        validate = last or (s.val_every > 0 and (epoch + 1) % s.val_every == 0)
        val = predict(model, va, device, batch_size=bs) if validate and len(va) else None
        val_loss = _bce_from_probs(val["labels"], val["probs"]) if val is not None else math.nan
        elapsed += time.perf_counter() - t0
        row = {"epoch": epoch + 1, "images": n, "train_loss": train_loss, "val_loss": val_loss,
               "val_auroc_implant": _auroc(val["labels"][:, 0], val["probs"][:, 0]) if val is not None else math.nan,
               "val_auroc_scoliosis": _auroc(val["labels"][:, 1], val["probs"][:, 1]) if val is not None else math.nan,
               "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        history.append(row)
        if val is not None and (val_loss < best_loss - 1e-4 or best_state is None):
            best_loss, best_epoch, bad_epochs = val_loss, epoch + 1, 0
            best_state = _cpu_copy(model)
            best_val = val
        elif val is not None:
            bad_epochs += 1
        if ddp_rank == 0:
            if log_path:
                _append_csv(log_path, row)
            final = last or bad_epochs >= s.patience
            if ckpt and (s.final_checkpoint or not final) and checkpoint_due(last_write, s.checkpoint_every_s, final):
                last_write = time.perf_counter()
                _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "epoch": epoch, "best_loss": best_loss,
                              "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                              "best_state": best_for_checkpoint(best_state, best_epoch, epoch),
                              "history": history, "train_seconds": elapsed, "rng": rng_state(),
                              "settings": _plain(asdict(s))}, ckpt)
        if on_epoch_end is not None:
            on_epoch_end(row)
        if epoch_bar is not None:
            epoch_bar.update(1)
            epoch_bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
        log.info("%s epoch %d: train loss %.4f, val loss %.4f", model.default_cfg["name"], epoch + 1, train_loss,
                 val_loss)
    if epoch_bar is not None:
        epoch_bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"val_pred": best_val, "history": history, "best_epoch": best_epoch, "epochs_run": len(history),
            "train_seconds": elapsed,
            "stopped_early": stopped_early, "train_loss": history[-1]["train_loss"] if history else math.nan,
            "best_val_loss": best_loss}


def _cpu_copy(model) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def checkpoint_due(last_write: float, every_s: float, final: bool) -> bool:
    """Whether an epoch's end writes the checkpoint: after the last epoch, or once ``every_s`` seconds have passed.

    Why by time: a quick CPU epoch is 10-12 steps, and a checkpoint (weights + two AdamW moments + best weights)
    is 100-1100 MB; writing one per epoch made the quick run write over 4 GB to a slow disk. A killed run resumes
    from the last checkpoint and replays the epochs after it to the same result (augmentation is seeded by epoch).
    """
    return final or every_s <= 0 or time.perf_counter() - last_write >= every_s


def best_for_checkpoint(best_state: dict | None, best_epoch: int, epoch: int) -> dict | None:
    """The best weights as a checkpoint of 0-based ``epoch`` stores them: None when that epoch is the best.

    Its weights are then already the checkpoint's own: not storing them twice saves a quarter of every write
    (280 of 1120 MB per epoch for the Inception-ResNet-v2 detector: weights, two AdamW moments, best weights).
    :func:`restore_checkpoint` puts them back.
    """
    return None if best_epoch == epoch + 1 else best_state


def optimizer_step(model, loss, params, optimizer, scheduler, epoch: int, step: int) -> None:
    """One update shared by every training loop: refuse a non-finite loss, clip gradients at 10, step."""
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"{model.default_cfg['name']}: loss became {loss.item()} at epoch "
                                 f"{epoch + 1}, step {step + 1}; lower the learning rate")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 10.0)
    optimizer.step()
    scheduler.step()


def restore_checkpoint(ckpt: Path | None, model, optimizer, scheduler) -> dict | None:
    """Load model, optimizer, scheduler and RNG from a per-epoch checkpoint (shared by every training loop).

    Returns the checkpoint dict for the loop's own bookkeeping (epoch, best weights, history), or None when there
    is no checkpoint to resume from.
    """
    if not ckpt or not Path(ckpt).is_file():
        return None
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    if state.get("best_state") is None and state.get("best_epoch") == state["epoch"] + 1:
        state["best_state"] = _cpu_copy(model)  # stored as "this checkpoint's own weights" (best_for_checkpoint)
    log.info("resumed %s after epoch %d", ckpt, state["epoch"] + 1)
    return state


def _epoch_loader(tr, task, bs, seed, epoch, num_workers, device, rank, world) -> DataLoader:
    tr.set_epoch(epoch)
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    if world > 1:
        sampler = torch.utils.data.distributed.DistributedSampler(tr, num_replicas=world, rank=rank, shuffle=True,
                                                                  seed=seed)
        sampler.set_epoch(epoch)
    elif task == "detection":
        sampler = torch.utils.data.WeightedRandomSampler(_balanced_sampler_weights(tr), len(tr), replacement=True,
                                                         generator=g)
    else:
        sampler = torch.utils.data.RandomSampler(tr, generator=g)
    return DataLoader(tr, batch_size=bs, sampler=sampler, collate_fn=collate_dicts, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


def _auroc(y: np.ndarray, p: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return math.nan
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y, p))


def _plain(d: dict) -> dict:
    """Settings as JSON/weights_only-safe primitives."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _append_csv(path, row: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def _save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@_shape_aware
@torch.inference_mode()
def measure_latency(model, ds: SpineDataset, device, image_size=None, n: int = 8, warmup: int = 2) -> float:
    """Median milliseconds for one image (batch 1, preprocessing excluded) on ``device``."""
    model.eval()
    tf = transforms_for(model, image_size, train=False)
    items = [tf(ds[i], np.random.default_rng(0)) for i in range(min(len(ds), n))]
    if not items:
        return math.nan
    times = []
    for k in range(warmup + len(items)):
        img = items[k % len(items)]["image"].to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with autocast(device):
            model([img]) if _task(model) == "detection" else model(img[None])
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))

