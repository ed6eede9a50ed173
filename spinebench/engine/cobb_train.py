"""Training, prediction and scoring of the Cobb-angle landmark models (task ``cobb``).

Plain-argument functions for the run-all orchestration, plus a command line for a full training run (the recipe of
the shipped weights: 300 epochs, batch 16, AdamW 1e-3, 3 warm-up epochs then cosine; about 5 minutes on one
H100/H200, far too long for a CPU)::

    python -m spinebench.engine.cobb_train --data aasce=/path/to/aasce2019 --device cuda --out weights/ \
        --log runs/cobb_vertebra_resnet34.csv --checkpoint runs/cobb_vertebra_resnet34.ckpt --checkpoint-every 10

It trains on the train split of ``assign_splits(seed=0)``, keeps the epoch with the lowest validation SMAPE, scores
the test split (patient-bootstrap CIs) and saves ``weights/<model>.pt`` with the metrics in the manifest.

Why the training loop differs from ``spinebench.engine.train``: the targets are 68 landmarks, not labels, and
every geometric augmentation must move them with the pixels. Each split is resized once to the model's input
(H, W) and kept as one tensor; rotation, scale, shift, mirroring and exposure changes are then drawn per sample
and applied to the whole batch on the training device (``augment_batch``), so a GPU never waits for a data loader
and a CPU does not resample 1-3 MP radiographs every epoch.

The checkpoint/resume/early-stopping habits are those of ``train_model``: a checkpoint after every epoch (model,
optimizer, scheduler, best weights, history, RNG), warm-up then cosine decay, a hard stop on a non-finite loss.
The model kept is the one with the lowest validation SMAPE, the AASCE challenge's own metric.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from spinebench import SCOLIOSIS_COBB_DEG
from spinebench.cobb import (ANGLE_NAMES, N_LANDMARKS, SEVERITY_GRADES, cobb_angles, severity_grade,
                             smape)
from spinebench.data.transforms import resize
from spinebench.engine.device import autocast, rng_state
from spinebench.engine.train import (_append_csv, _cpu_copy, _save_atomic, _schedule, best_for_checkpoint,
                                     checkpoint_due, optimizer_step, restore_checkpoint)
from spinebench.errors import SpinebenchError

log = logging.getLogger(__name__)



# ------------------------------------------------------------------------------------------- inputs
def _input_size(model) -> tuple[int, int]:
    return tuple(int(v) for v in model.default_cfg["input_size"])


def stack_inputs(ds, size: tuple[int, int]) -> dict:
    """Every item of ``ds`` resized (aspect not kept) to ``size`` = (H, W), as tensors.

    Returns {"images" (N, 1, H, W) float16, "landmarks" (N, 68, 2) float32 in input pixels (NaN if unknown),
    "to_input" (N, 2): input pixels per dataset-image pixel in x and y, "image_hw" (N, 2) the dataset images'
    (H, W), "patient_ids", "image_ids", "cobb" (N, 3), "scale" (N,) dataset pixels per original pixel}.
    """
    h, w = size
    n = len(ds)
    images = torch.empty((n, 1, h, w), dtype=torch.float16)
    lms = torch.full((n, N_LANDMARKS, 2), math.nan)
    to_input = torch.empty((n, 2))
    image_hw = torch.empty((n, 2))
    pids, iids, cobb, scale = [], [], [], []
    for i in range(n):
        item = ds[i]
        img = item["image"]
        ih, iw = img.shape[-2:]
        images[i] = resize(img.float(), (h, w)).to(torch.float16)
        to_input[i] = torch.tensor([w / iw, h / ih])
        image_hw[i] = torch.tensor([ih, iw], dtype=torch.float32)
        lms[i] = item["landmarks"].float() * to_input[i]
        pids.append(item["patient_id"])
        iids.append(item["image_id"])
        cobb.append(item["cobb"].numpy())
        scale.append(float(item["scale"]))
    return {"images": images, "landmarks": lms, "to_input": to_input, "image_hw": image_hw,
            "patient_ids": pids, "image_ids": iids, "cobb": np.asarray(cobb, dtype=np.float64).reshape(-1, 3),
            "scale": np.asarray(scale, dtype=np.float64)}


def augment_batch(images: torch.Tensor, landmarks: torch.Tensor, gen: torch.Generator, *, rot_deg: float = 10.0,
                  scale: tuple[float, float] = (0.8, 1.15), shift: float = 0.06, flip_p: float = 0.5,
                  intensity: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine + mirror + exposure per sample; the landmarks follow the pixels.

    The affine turns about the image centre, scales and shifts in pixel space (so a rotation stays a rotation
    whatever the input's aspect); mirroring swaps each vertebra's left and right corners so the AASCE order holds.
    The random numbers come from ``gen`` (CPU), so a batch is the same on every device.
    """
    b, _, h, w = images.shape
    dev = images.device
    rnd = torch.rand((b, 8), generator=gen)
    ang = torch.deg2rad((rnd[:, 0] * 2 - 1) * rot_deg)
    s = scale[0] + rnd[:, 1] * (scale[1] - scale[0])
    tx, ty = (rnd[:, 2] * 2 - 1) * shift * w, (rnd[:, 3] * 2 - 1) * shift * h
    flip = rnd[:, 4] < flip_p
    cx, cy = w / 2, h / 2
    cos, sin = torch.cos(ang) * s, torch.sin(ang) * s
    # forward map of points, p' = A p + t, about the centre; then mirror x
    a = torch.zeros((b, 3, 3))
    a[:, 0, 0], a[:, 0, 1], a[:, 1, 0], a[:, 1, 1] = cos, -sin, sin, cos
    a[:, 0, 2] = cx + tx - (cos * cx - sin * cy)
    a[:, 1, 2] = cy + ty - (sin * cx + cos * cy)
    a[:, 2, 2] = 1
    m = torch.eye(3).repeat(b, 1, 1)
    m[flip, 0, 0], m[flip, 0, 2] = -1.0, float(w)
    fwd = m @ a
    # grid_sample wants output -> input in normalised coordinates (align_corners=False: u = (n + 1) * W / 2)
    to_n = torch.tensor([[2 / w, 0, -1], [0, 2 / h, -1], [0, 0, 1]])
    theta = (to_n @ torch.linalg.inv(fwd) @ torch.linalg.inv(to_n))[:, :2].to(dev, images.dtype)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    pts = torch.cat([landmarks, torch.ones_like(landmarks[..., :1])], -1) @ fwd.to(dev).transpose(1, 2)
    pts = pts[..., :2]
    if flip.any():
        fl = flip.to(dev)
        swapped = pts.reshape(b, -1, 2, 2, 2).flip(3).reshape(b, -1, 2)
        pts = torch.where(fl[:, None, None], swapped, pts)
    if intensity > 0:
        gamma = torch.exp((rnd[:, 5] * 2 - 1) * 0.35 * intensity).to(dev, out.dtype)
        contrast = (1 + (rnd[:, 6] * 2 - 1) * 0.2 * intensity).to(dev, out.dtype)
        bright = ((rnd[:, 7] * 2 - 1) * 0.08 * intensity).to(dev, out.dtype)
        out = out.clamp(1e-4, 1) ** gamma[:, None, None, None]
        out = (out - 0.5) * contrast[:, None, None, None] + 0.5 + bright[:, None, None, None]
        sigma = (torch.rand((b,), generator=gen) * 0.03 * intensity).to(dev, out.dtype)
        # the noise field is drawn on the device (a CPU draw of B x H x W normals would stall a GPU step)
        dev_gen = torch.Generator(device=dev).manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
        noise = torch.randn(out.shape, generator=dev_gen, device=dev, dtype=out.dtype)
        out = (out + sigma[:, None, None, None] * noise).clamp(0, 1)
    return out, pts


# ------------------------------------------------------------------------------------------- prediction
@torch.inference_mode()
def _predict_stacked(model, data: dict, device, batch_size: int = 8, flip_tta: bool = False) -> np.ndarray:
    """(N, 68, 2) landmarks in the dataset images' pixels from stacked inputs."""
    from spinebench.models.cobb_net import decode_landmarks

    model.eval()
    out = []
    for i in range(0, len(data["images"]), batch_size):
        x = data["images"][i:i + batch_size].to(device).float()
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            pts = decode_landmarks(model(x))[0]
            if flip_tta:
                w = x.shape[-1]
                pf = decode_landmarks(model(x.flip(-1)))[0]
                pf[..., 0] = w - pf[..., 0]
                pf = pf.reshape(len(x), -1, 2, 2, 2).flip(3).reshape(len(x), -1, 2)
                pts = (pts + pf) / 2
        out.append(pts.float().cpu())
    pts = torch.cat(out) if out else torch.zeros((0, N_LANDMARKS, 2))
    return (pts / data["to_input"][:, None, :]).numpy().astype(np.float64)


def predict_landmarks(model, ds, device, batch_size: int = 8, flip_tta: bool = False) -> np.ndarray:
    """(N, 68, 2) predicted landmarks in the pixels of the dataset's images (``ds[i]["image"]``).

    ``flip_tta`` also predicts the mirrored image and averages (twice the time).
    """
    device = torch.device(device)
    model.to(device)
    return _predict_stacked(model, stack_inputs(ds, _input_size(model)), device, batch_size, flip_tta)


# ------------------------------------------------------------------------------------------- scoring
def _angles(landmarks: np.ndarray, heights: Sequence[float] | None) -> np.ndarray:
    out = np.zeros((len(landmarks), 3))
    for i, lm in enumerate(landmarks):
        out[i] = cobb_angles(lm, None if heights is None else float(heights[i])).angles
    return out


def score_cobb(pred_landmarks, true_landmarks, true_angles, patient_ids: Sequence[str], n_boot: int = 1000,
               seed: int = 0, image_heights: Sequence[float] | None = None,
               scales: Sequence[float] | None = None) -> dict:
    """Cobb-angle metrics of predicted landmarks, with 95% bootstrap CIs over patients.

    ``pred_landmarks`` and ``true_landmarks`` are (N, 68, 2) in the same pixels; ``true_angles`` (N, 3) the
    reference PT/MT/TL angles; ``image_heights`` the heights of those images (the AASCE S-curve rule needs it);
    ``scales`` their pixels per original pixel, to report the landmark error in original pixels too.

    Metrics: smape, mae_pt/mt/tl, mae_largest, landmark_mpe_px(_orig), grade_accuracy, scoliosis_sensitivity and
    scoliosis_specificity (largest angle >= 10 degrees, measured vs reference), each with ``<name>_lo/_hi``
    (spinebench.evaluation.metrics.bootstrap_ci over patients); grade_confusion (4x4, rows reference, columns
    predicted, order none/mild/moderate/severe), n_images, n_patients, pred_angles (N, 3).
    """
    from spinebench.evaluation.metrics import bootstrap_ci

    pred = np.asarray(pred_landmarks, dtype=np.float64)
    true = np.asarray(true_landmarks, dtype=np.float64)
    ta = np.asarray(true_angles, dtype=np.float64).reshape(-1, 3)
    if not (len(pred) == len(true) == len(ta) == len(patient_ids)):
        raise ValueError("pred_landmarks, true_landmarks, true_angles and patient_ids differ in length")
    n = len(pred)
    if n == 0:
        raise SpinebenchError("score_cobb: nothing to score (no images)")
    pa = _angles(pred, image_heights)
    err = np.linalg.norm(pred - true, axis=-1).mean(1)        # per image mean point error
    sc = np.ones(n) if scales is None else np.asarray(scales, dtype=np.float64)
    p_big, t_big = pa.max(1), ta.max(1)
    g_pred = np.array([SEVERITY_GRADES.index(severity_grade(a)) for a in p_big])
    g_true = np.array([SEVERITY_GRADES.index(severity_grade(a)) for a in t_big])
    t_pos, p_pos = t_big >= SCOLIOSIS_COBB_DEG, p_big >= SCOLIOSIS_COBB_DEG
    num = np.abs(pa - ta).sum(1)
    den = (pa + ta).sum(1)
    # per-image quantities whose (weighted) means are the metrics; sensitivity/specificity are ratios of two
    per_image = {"smape": 100 * np.divide(num, den, out=np.zeros(n), where=den != 0),
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
    conf = np.zeros((4, 4), dtype=int)
    np.add.at(conf, (g_true, g_pred), 1)
    metrics.update({"grade_confusion": conf.tolist(), "grade_order": list(SEVERITY_GRADES), "n_images": n,
                    "n_patients": len(set(patient_ids)), "n_boot": n_boot, "pred_angles": pa.round(3).tolist()})
    return metrics


def score_dataset(model, ds, device, n_boot: int = 1000, seed: int = 0, batch_size: int = 8,
                  flip_tta: bool = False) -> dict:
    """Predict on ``ds`` and score against its landmarks and Cobb angles (a convenience for the runner)."""
    device = torch.device(device)
    model.to(device)
    data = stack_inputs(ds, _input_size(model))
    pred = _predict_stacked(model, data, device, batch_size, flip_tta)
    true = (data["landmarks"] / data["to_input"][:, None, :]).numpy()
    return score_cobb(pred, true, data["cobb"], data["patient_ids"], n_boot=n_boot, seed=seed,
                      image_heights=data["image_hw"][:, 0].tolist(), scales=data["scale"])


# ------------------------------------------------------------------------------------------- training
def _quick_val(model, data: dict, device, batch_size: int) -> dict:
    """Validation SMAPE, angle MAE and landmark error (no bootstrap) for model selection."""
    pred = _predict_stacked(model, data, device, batch_size)
    true = (data["landmarks"] / data["to_input"][:, None, :]).numpy()
    pa = _angles(pred, data["image_hw"][:, 0].tolist())
    return {"val_smape": smape(pa, data["cobb"]), "val_mae": float(np.abs(pa - data["cobb"]).mean()),
            "val_mpe_px": float(np.linalg.norm(pred - true, axis=-1).mean())}


def train_cobb(model, train_ds, val_ds, *, epochs: int, batch_size: int = 8, lr: float = 1e-3, device="cpu",
               seed: int = 0, checkpoint_path: str | os.PathLike | None = None, resume: bool = False,
               log_path: str | os.PathLike | None = None, progress: bool = True, weight_decay: float = 1e-4,
               warmup_epochs: float = 3.0, max_steps_per_epoch: int | None = None, val_every: int = 1,
               time_budget_s: float | None = None, augment: dict | None = None, checkpoint_every: int = 1,
               checkpoint_every_s: float = 0.0, final_checkpoint: bool = True) -> dict:
    """Train a ``cobb`` model in place and load its best weights (lowest validation SMAPE) at the end.

    ``time_budget_s`` stops after the epoch that crosses it (the cosine schedule is still planned over
    ``epochs``). The checkpoint (model, optimizer, best weights: ~4x the model) is written every
    ``checkpoint_every`` epochs once ``checkpoint_every_s`` seconds have passed since the last one
    (``train.checkpoint_due``), and after the last one unless ``final_checkpoint`` is off; on a GPU an epoch can take a second, a checkpoint as long.
    Returns {"history", "best_epoch", "best_val_smape", "epochs_run", "train_seconds"}.
    Raises NonFiniteLossError when the loss becomes NaN/inf.
    """
    from spinebench.models.cobb_net import encode_targets, landmark_loss

    device = torch.device(device)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    size = _input_size(model)
    t_prep = time.perf_counter()
    tr = stack_inputs(train_ds, size)
    keep = torch.isfinite(tr["landmarks"]).all(-1).all(-1)
    if not bool(keep.all()):
        log.warning("%d training images have no landmarks; left out", int((~keep).sum()))
    tr_images, tr_lms = tr["images"][keep].to(device), tr["landmarks"][keep].to(device)
    va = stack_inputs(val_ds, size) if val_ds is not None and len(val_ds) else None
    log.info("cobb inputs ready in %.1fs: %d train, %d val at %s", time.perf_counter() - t_prep, len(tr_images),
             0 if va is None else len(va["images"]), size)
    n = len(tr_images)
    if n == 0:
        raise SpinebenchError("train_cobb: no training images with landmarks")
    steps = max(1, n // batch_size) if n >= batch_size else 1
    if max_steps_per_epoch:
        steps = min(steps, max_steps_per_epoch)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    scheduler = _schedule(optimizer, epochs * steps, int(warmup_epochs * steps))
    out_hw = (size[0] // 4, size[1] // 4)
    aug = dict(augment or {})
    history: list[dict] = []
    start_epoch, best_smape, best_epoch, best_state, elapsed = 0, math.inf, -1, None, 0.0
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    last_write = time.perf_counter()
    state = restore_checkpoint(ckpt, model, optimizer, scheduler) if resume else None
    if state is not None:
        start_epoch, best_smape, best_epoch = state["epoch"] + 1, state["best_smape"], state["best_epoch"]
        best_state, history, elapsed = state["best_state"], state["history"], state["train_seconds"]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs, initial=start_epoch, desc=model.default_cfg["name"], unit="epoch", leave=False)
    for epoch in range(start_epoch, epochs):
        if time_budget_s is not None and elapsed >= time_budget_s:
            log.info("time budget of %.0fs reached after %d epochs", time_budget_s, epoch)
            break
        t0 = time.perf_counter()
        model.train()
        gen = torch.Generator().manual_seed(seed * 100003 + epoch)
        perm = torch.randperm(n, generator=gen)
        if n < batch_size:
            perm = perm.repeat(math.ceil(batch_size / n))[:batch_size]
        sums = {"loss": 0.0, "hm": 0.0, "reg": 0.0, "wh": 0.0}
        for step in range(steps):
            idx = perm[step * batch_size:(step + 1) * batch_size].to(device)
            x, lm = augment_batch(tr_images[idx].float(), tr_lms[idx], gen, **aug)
            targets = encode_targets(lm, out_hw)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device):
                out = model(x)
            loss, parts = landmark_loss(out, targets)
            optimizer_step(model, loss, params, optimizer, scheduler, epoch, step)
            sums["loss"] += float(loss.detach())
            for k, v in parts.items():
                sums[k] += v
        row = {"epoch": epoch + 1, "images": steps * batch_size, **{f"train_{k}": v / steps for k, v in sums.items()},
               "lr": optimizer.param_groups[0]["lr"]}
        last = epoch + 1 == epochs or (time_budget_s is not None and
                                       elapsed + time.perf_counter() - t0 >= time_budget_s)
        if va is not None and ((epoch + 1) % val_every == 0 or last):
            row.update(_quick_val(model, va, device, batch_size))
            if row["val_smape"] < best_smape or best_state is None:
                best_smape, best_epoch = row["val_smape"], epoch + 1
                best_state = _cpu_copy(model)
        elif va is None:
            best_epoch, best_state = epoch + 1, None
        elapsed += time.perf_counter() - t0
        row["seconds"] = time.perf_counter() - t0
        history.append(row)
        if log_path:
            _append_csv(log_path, row)
        if ckpt and ((last and final_checkpoint) or (not last and (epoch + 1) % checkpoint_every == 0 and
                                                     checkpoint_due(last_write, checkpoint_every_s, False))):
            last_write = time.perf_counter()
            _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(), "epoch": epoch, "best_smape": best_smape,
                          "best_epoch": best_epoch,
                          "best_state": best_for_checkpoint(best_state, best_epoch, epoch), "history": history,
                          "train_seconds": elapsed, "rng": rng_state()}, ckpt)
        log.info("%s epoch %d: loss %.4f%s (%.0fs)", model.default_cfg["name"], epoch + 1, row["train_loss"],
                 f", val SMAPE {row['val_smape']:.2f}%" if "val_smape" in row else "", row["seconds"])
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", smape=f"{row.get('val_smape', math.nan):.1f}")
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"history": history, "best_epoch": best_epoch, "best_val_smape": best_smape,
            "epochs_run": len(history), "train_seconds": elapsed}


# ------------------------------------------------------------------------------------------- command line
def load_cobb_splits(specs: Sequence[str], split_seed: int = 0, max_side: int = 1024,
                     split_file: str | None = None) -> dict:
    """Records with landmarks from ``specs``, split by patient, decoded once: {"train", "val", "test"} datasets."""
    from spinebench.data.dataset import SpineDataset
    from spinebench.data.sources import load_records
    from spinebench.data.splits import apply_split_file, assign_splits

    records = [r for r in load_records(list(specs)) if r.get("landmarks") is not None]
    if not records:
        raise SpinebenchError(f"no images with vertebra landmarks in {' '.join(specs)}")
    records = apply_split_file(records, split_file) if split_file else assign_splits(records, seed=split_seed)
    full = SpineDataset(records, max_side=max_side, workers=min(8, os.cpu_count() or 1))
    return {s: full.subset([i for i, r in enumerate(records) if r["split"] == s]) for s in ("train", "val", "test")}


def run_training(*, data: Sequence[str], epochs: int, out: str | os.PathLike = "weights", model_name: str =
                 "cobb_vertebra_resnet34", batch_size: int = 16, lr: float = 1e-3, device: str = "auto",
                 seed: int = 0, split_seed: int = 0, max_side: int = 1024, checkpoint: str | None = None,
                 resume: bool = False, log_path: str | None = None, time_budget_s: float | None = None,
                 n_boot: int = 1000, pretrained: str = "auto", progress: bool = True,
                 input_size: Sequence[int] | None = None, checkpoint_every: int = 1) -> dict:
    """Train ``model_name`` on the train split of ``data``, select on val, score on test, save to ``out``."""
    from spinebench.engine.device import resolve_device, seed_everything
    from spinebench.engine.weights import save_weights
    from spinebench.models import create_model

    dev = resolve_device(device)
    seed_everything(seed)
    splits = load_cobb_splits(data, split_seed=split_seed, max_side=max_side)
    model = create_model(model_name, pretrained=pretrained, input_size=tuple(input_size) if input_size else None)
    fit = train_cobb(model, splits["train"], splits["val"], epochs=epochs, batch_size=batch_size, lr=lr,
                     device=dev, seed=seed, checkpoint_path=checkpoint, resume=resume, log_path=log_path,
                     progress=progress, time_budget_s=time_budget_s, checkpoint_every=checkpoint_every)
    test = score_dataset(model, splits["test"], dev, n_boot=n_boot, seed=seed) if len(splits["test"]) else {}
    meta = {"task": "cobb", "data": list(data), "split_seed": split_seed, "seed": seed, "epochs": epochs,
            "epochs_run": fit["epochs_run"], "best_epoch": fit["best_epoch"], "best_val_smape": fit["best_val_smape"],
            "train_seconds": fit["train_seconds"], "pretrained": bool(model.pretrained_loaded),
            "input_size": list(_input_size(model)), "model_kwargs": {"input_size": list(_input_size(model))},
            "cache_side": max_side, "device": str(dev),
            "test_metrics": {k: v for k, v in test.items() if k != "pred_angles"}}
    path = save_weights(model.to("cpu"), out, meta=meta)
    return {"weights": str(path), "fit": fit, "test": test, "meta": meta}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spinebench.engine.cobb_train",
                                description="Train a Cobb-angle landmark model, score it on held-out patients, "
                                            "save its weights.")
    p.add_argument("--data", nargs="+", default=["aasce"], metavar="SPEC", help="data specs with landmarks "
                   "(default: aasce, the shared copy)")
    p.add_argument("--model", default="cobb_vertebra_resnet34")
    p.add_argument("--epochs", type=int, default=300, help="default 300 (about 5 minutes on one H100/H200)")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                   help="model input (default: the model's, 1024 512); multiples of 32")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--max-side", type=int, default=1024, help="decoded-image cache side (default 1024)")
    p.add_argument("--out", default="weights", help="weights folder (default weights/)")
    p.add_argument("--checkpoint", help="checkpoint file written every epoch (resume with --resume)")
    p.add_argument("--checkpoint-every", type=int, default=1, metavar="N", help="write the checkpoint every N epochs")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--log", help="CSV log, one row per epoch")
    p.add_argument("--time-budget", type=float, help="stop after this many seconds of training")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--pretrained", choices=("auto", "imagenet", "none"), default="auto")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        res = run_training(data=args.data, epochs=args.epochs, out=args.out, model_name=args.model,
                           batch_size=args.batch_size, lr=args.lr, device=args.device, seed=args.seed,
                           split_seed=args.split_seed, max_side=args.max_side, checkpoint=args.checkpoint,
                           resume=args.resume, log_path=args.log, time_budget_s=args.time_budget,
                           n_boot=args.n_boot, pretrained=args.pretrained, progress=not args.quiet,
                           input_size=args.input_size, checkpoint_every=args.checkpoint_every)
    except SpinebenchError as e:
        print(f"spinebench: error: {e}", file=sys.stderr)
        return 2
    t = res["test"]
    if t:
        print(f"test: SMAPE {t['smape']:.2f}% [{t['smape_lo']:.2f}, {t['smape_hi']:.2f}]  MAE pt/mt/tl "
              f"{t['mae_pt']:.2f}/{t['mae_mt']:.2f}/{t['mae_tl']:.2f} deg  landmark error "
              f"{t['landmark_mpe_px_orig']:.1f} px  grade accuracy {t['grade_accuracy']:.3f}")
    print(f"weights: {res['weights']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
