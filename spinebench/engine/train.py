"""The one training loop of every registered model (the paper's six and the Cobb landmark model), resumable.

The loop follows torchvision's reference scripts: linear warm-up then cosine decay, early stopping on the
validation split, a per-model time budget, a hard stop on a non-finite loss, and a checkpoint (model, optimizer,
scheduler, epoch, best weights, history, RNG) written by time, so a killed run resumes to the same result. What
differs per kind of model (its data, loss, validation, prediction and scoring) is its task object
(:mod:`spinebench.tasks`); the image-level six are all selected by the validation image-level binary
cross-entropy, the landmark model by validation SMAPE.
"""

from __future__ import annotations

import contextlib
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

from spinebench.data.dataset import SpineDataset
from spinebench.engine.device import (autocast, channels_last, cudnn_autotune, guard_bf16_convs, rng_state,
                                      scoring_precision, set_rng_state)
from spinebench.errors import SpinebenchError
from spinebench.evaluation.results import append_csv_row
from spinebench.tasks import get_task

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
    patience: int | None = 5                   # epochs without a better validation score; None = no early stop
    time_budget_s: float | None = None         # stop after the epoch that crosses this much training time
    image_size: tuple[int, int] | None = None  # classifiers: (H, W); None = the model's default
    max_steps_per_epoch: int | None = None     # caps an epoch (quick CPU profile)
    aux_weight: float = 0.4                    # Inception-v3 auxiliary logits, as torchvision's reference
    aux_shape_weight: float = 0.0              # classifiers: weight of the train-time spine-shape loss (vertebra
                                               # centres and tilts from the landmarks; tasks.classification); 0 = off
    aux_shape_head: str = "pooled"             # its head: "pooled" (linear on the pooled features) or "spatial"
                                               # (on the map before pooling; tasks.classification.SpineShapeHead)
    aux_implant_weight: float = 0.0            # classifiers: weight of the train-time implant-map loss (where the
                                               # implant boxes are, per cell of the map; ImplantMapHead); 0 = off
    num_workers: int = 0
    val_every: int = 1                         # validate every N epochs; 0 = only after the last epoch (quick CPU)
    checkpoint_every_s: float = 0.0            # write the checkpoint when this long has passed since the last one
                                               # (and after the last epoch); 0 = after every epoch
    final_checkpoint: bool = True              # also after the last epoch (run-all turns it off when it deletes
                                               # a finished model's checkpoint anyway)
    extra: dict = field(default_factory=dict)  # task-specific knobs (the Cobb model's "augment" kwargs)


def _shape_aware(fn: Callable) -> Callable:
    """Run ``fn(model, ...)`` without cuDNN autotuning when the model's task has variable input shapes."""
    @functools.wraps(fn)
    def wrapper(model, *args, **kwargs):
        with cudnn_autotune(get_task(model).fixed_shapes):
            return fn(model, *args, **kwargs)
    return wrapper


def transforms_for(model, image_size: tuple[int, int] | None, train: bool) -> Callable:
    """The item transform a model trains or predicts with (its task's; see ``spinebench.tasks``)."""
    return get_task(model).transform(model, image_size, train)


@_shape_aware
def predict(model, ds: SpineDataset, device, batch_size: int = 16, progress: bool = False):
    """The model's predictions on ``ds`` (already transformed), as its task returns them (``Task.predict``):
    image-level probabilities (and boxes) for the six, landmarks for the Cobb model; in fp32, as scores are."""
    with scoring_precision():
        return get_task(model).predict(model, ds, device, batch_size=batch_size, progress=progress)


def _schedule(optimizer, total_steps: int, warmup_steps: int, clock: Callable[[], float] | None = None):
    """Linear warm-up, then cosine decay to 0 at ``total_steps``, or earlier by the clock.

    ``clock()`` returns the fraction of the time budget used (``TrainSettings.time_budget_s``): the decay follows
    whichever of steps and time is further along, so a model stopped by its budget has annealed its learning rate
    by then instead of stopping at a high rate mid-schedule (budgeted training, Li et al., ICLR 2020).
    """
    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        if clock is not None:
            t = max(t, clock())
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


@_shape_aware
def train_model(model, train_ds: SpineDataset, val_ds: SpineDataset | None, *, settings: TrainSettings, device,
                seed: int, checkpoint_path: str | os.PathLike | None = None, resume: bool = False,
                log_path: str | os.PathLike | None = None, progress: bool = True,
                ddp_rank: int = 0, ddp_world: int = 1, on_epoch_end: Callable[[dict], None] | None = None) -> dict:
    """Train any registered model in place and load its best weights (lowest validation ``task.monitor``).

    The one loop of every model: what differs per task (data, loss, validation) comes from its task object
    (``spinebench.tasks``). ``settings.time_budget_s`` ends training once that much time is spent (validated,
    selected and checkpointed like a last epoch; the learning rate is annealed by the clock, see ``_schedule``).
    Returns {"val_pred": the best epoch's validation predictions, in fp32 (None after a resume that skipped it,
    and for the Cobb model, which chooses no thresholds), "history": [per-epoch dicts], "best_epoch", "best_score" (its monitored value), "monitor",
    "epochs_run", "train_seconds", "stopped_early", "stopped_by_budget", "train_loss" (last epoch's mean total loss,
    the paper's "total loss" for the detectors)}.
    Raises NonFiniteLossError when a loss is NaN/inf. ``on_epoch_end(row)`` is called after each epoch's
    checkpoint is written (progress displays; tests use it to kill a run midway).
    """
    fit = _Fit(model, train_ds, val_ds, settings, torch.device(device), seed, ddp_rank, ddp_world)
    ckpt = Path(checkpoint_path) if checkpoint_path else None
    if resume:
        fit.restore(ckpt)
    name = model.default_cfg["name"]
    bar = None
    if progress and ddp_rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=settings.epochs, initial=fit.start_epoch, desc=name, unit="epoch", leave=False)
    for epoch in range(fit.start_epoch, settings.epochs):
        if fit.bad_epochs >= fit.patience:
            fit.stopped_early = True
            break
        if fit.elapsed >= fit.budget:
            fit.stopped_by_budget = True
            log.info("%s: time budget of %.0fs reached after %d epochs", name, fit.budget, epoch)
            break
        row, last = fit.epoch(epoch)
        if ddp_rank == 0:
            if log_path:
                append_csv_row(log_path, row)
            if ckpt:
                fit.checkpoint(ckpt, epoch, final=last or fit.bad_epochs >= fit.patience)
        if on_epoch_end is not None:
            on_epoch_end(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train=f"{row['train_loss']:.3f}", val=f"{row[fit.task.monitor]:.3f}")
        log.info("%s epoch %d: train loss %.4f, %s %.4f (%.0fs)", name, epoch + 1, row["train_loss"],
                 fit.task.monitor, row[fit.task.monitor], row["seconds"])
        if last and epoch + 1 < settings.epochs:
            fit.stopped_by_budget = True
            break
    if bar is not None:
        bar.close()
    return fit.finish()


class _Fit:
    """The state of one model's training between epochs (what a checkpoint stores), and one epoch of it."""

    def __init__(self, model, train_ds, val_ds, s: TrainSettings, device, seed: int, rank: int, world: int):
        self.model, self.s, self.device, self.rank = model, s, device, rank
        self.task = task = get_task(model)
        guard_bf16_convs(model.to(device))
        if channels_last(device, task.fixed_shapes):
            model.to(memory_format=torch.channels_last)
        t_prep = time.perf_counter()
        self.data = task.train_data(model, train_ds, s, device, seed, rank, world)
        self.val = task.val_data(model, val_ds, s, device) if val_ds is not None and len(val_ds) else None
        log.info("%s: data ready in %.1fs (%d train images)", model.default_cfg["name"],
                 time.perf_counter() - t_prep, self.data.num_samples)
        self.params = [p for p in model.parameters() if p.requires_grad] + self.data.parameters()
        # fused AdamW: one kernel over all parameters instead of a dozen foreach passes; the same update (to
        # rounding) and state_dict. bf16 quick-profile steps on a 2-core CPU (bench_precision): Inception-v2 detector
        # 0.91 -> 0.75 s, Inception-ResNet-v2 2.45 -> 1.90 s, ResNet-50 at 192 x 80 unchanged (1.11 s)
        self.optimizer = torch.optim.AdamW(self.params, lr=s.lr, weight_decay=s.weight_decay,
                                           fused=device.type in ("cpu", "cuda"))
        steps = self.data.steps_per_epoch(world)
        self.steps_per_epoch = min(steps, s.max_steps_per_epoch) if s.max_steps_per_epoch else steps
        self.budget = s.time_budget_s if s.time_budget_s else math.inf
        self.elapsed, self.epoch_t0 = 0.0, time.perf_counter()  # training seconds before this epoch; its start
        self.patience = s.patience if s.patience is not None else math.inf
        self.scheduler = _schedule(self.optimizer, s.epochs * self.steps_per_epoch,
                                   int(s.warmup_epochs * self.steps_per_epoch), self.clock if s.time_budget_s else None)
        self.net = model if world == 1 else torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
        self.history: list[dict] = []
        self.start_epoch, self.best_score, self.best_epoch, self.bad_epochs, self.best_state = 0, math.inf, -1, 0, None
        self.best_val = None  # the best epoch's validation predictions: thresholds are chosen on them, no second pass
        self.last_write = time.perf_counter()
        self.stopped_early = self.stopped_by_budget = False

    def clock(self) -> float:
        """The fraction of the time budget used so far."""
        return (self.elapsed + time.perf_counter() - self.epoch_t0) / self.budget

    def restore(self, ckpt: Path | None) -> None:
        state = restore_checkpoint(ckpt, self.model, self.optimizer, self.scheduler)
        if state is None:
            return
        self.start_epoch, self.best_epoch = state["epoch"] + 1, state["best_epoch"]
        self.best_score = state.get("best_score", state.get("best_loss", state.get("best_smape", math.inf)))
        self.bad_epochs, self.best_state = state.get("bad_epochs", 0), state["best_state"]
        self.history, self.elapsed = state["history"], state["train_seconds"]
        self.data.load_state_dict(state.get("train_aux"))

    def epoch(self, epoch: int) -> tuple[dict, bool]:
        """Train one epoch, validate when due, keep the best state; (the epoch's log row, whether it was the last)."""
        s, task = self.s, self.task
        t0 = self.epoch_t0 = time.perf_counter()
        self.net.train()
        total, n, parts_sum = 0.0, 0, {}
        for step, batch in enumerate(self.data.batches(epoch)):
            if step >= self.steps_per_epoch or (step and self.clock() >= 1.0):  # the budget ends mid-epoch too
                break
            loss, parts = task.loss(self.net, batch, self.data, self.device, s)
            optimizer_step(self.model, loss, self.params, self.optimizer, self.scheduler, epoch, step)
            k = len(batch["image"])
            total, n = total + float(loss.detach()) * k, n + k
            for key, v in parts.items():
                parts_sum[key] = parts_sum.get(key, 0.0) + v * k
        last = epoch + 1 == s.epochs or self.clock() >= 1.0
        validate = self.val is not None and (last or (s.val_every > 0 and (epoch + 1) % s.val_every == 0))
        vrow, vpred = ({}, None)
        if validate:
            # in the scoring precision where the task picks its decision thresholds on these predictions: the
            # runner then uses the best epoch's as they are instead of a second fp32 pass over validation (bf16
            # validation + fp32 re-run cost the Inception-ResNet-v2 detector 21 + 30 s of the quick run, fp32
            # once 30 s)
            with scoring_precision() if task.thresholds else contextlib.nullcontext():
                vrow, vpred = task.validate(self.model, self.val, self.device, s)
        self.elapsed += time.perf_counter() - t0
        row = {"epoch": epoch + 1, "images": n, "train_loss": total / max(1, n),
               **{f"train_{k}": v / max(1, n) for k, v in parts_sum.items()},
               **({task.monitor: math.nan} | vrow), "lr": self.optimizer.param_groups[0]["lr"],
               "seconds": time.perf_counter() - t0}
        self.history.append(row)
        if validate and (vrow[task.monitor] < self.best_score - 1e-4 or self.best_state is None):
            self.best_score, self.best_epoch, self.bad_epochs = vrow[task.monitor], epoch + 1, 0
            self.best_state, self.best_val = _cpu_copy(self.model), vpred
        elif validate:
            self.bad_epochs += 1
        elif self.val is None:  # nothing to select on: the latest epoch is the one kept
            self.best_epoch, self.best_state = epoch + 1, None
        return row, last

    def checkpoint(self, ckpt: Path, epoch: int, final: bool) -> None:
        """Write the checkpoint when it is due (``checkpoint_due``); after the last epoch only if asked to."""
        s = self.s
        if not (s.final_checkpoint or not final) or not checkpoint_due(self.last_write, s.checkpoint_every_s, final):
            return
        self.last_write = time.perf_counter()
        _save_atomic({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                      "scheduler": self.scheduler.state_dict(), "epoch": epoch, "best_score": self.best_score,
                      "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs,
                      "best_state": best_for_checkpoint(self.best_state, self.best_epoch, epoch),
                      "history": self.history, "train_seconds": self.elapsed, "rng": rng_state(),
                      "train_aux": self.data.state_dict(),
                      "settings": _plain(asdict(s))}, ckpt)

    def finish(self) -> dict:
        """Load the best weights into the model; the loop's result (see :func:`train_model`)."""
        self.data.close()  # train-time extras (hooks, heads) leave the model as it was registered
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return {"val_pred": self.best_val, "history": self.history, "best_epoch": self.best_epoch,
                "best_score": self.best_score, "monitor": self.task.monitor, "epochs_run": len(self.history),
                "train_seconds": self.elapsed, "stopped_early": self.stopped_early,
                "stopped_by_budget": self.stopped_by_budget,
                "train_loss": self.history[-1]["train_loss"] if self.history else math.nan}


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


def _plain(d: dict) -> dict:
    """Settings as JSON/weights_only-safe primitives."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


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
    task = get_task(model)
    tf = task.transform(model, image_size, train=False)
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
            task.forward_one(model, img)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k >= warmup:
            times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))
