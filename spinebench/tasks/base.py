"""What every task object offers the one training loop, the runner and ``evaluate``.

A task knows what is particular to a kind of model: its input transform, how a batch becomes a loss, how a model
is validated and selected, how it predicts and is scored, and where its settings come from in a profile. The
training loop (:func:`spinebench.engine.train.train_model`), the runner and ``evaluate`` call only these methods,
so a new kind of model is one new module here, not a branch in six files (torchvision's reference scripts keep
one ``train_one_epoch`` per task for the same reason; here the loop is shared and the task is the argument).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from spinebench.data.dataset import SpineDataset, collate_dicts


class Task:
    """Base of the task objects; subclasses fill in what differs (see the module docstring)."""

    #: registry task name (``register_model(task=...)``)
    name: str = ""
    #: the validation key the loop selects the best epoch on (lower is better)
    monitor: str = "val_loss"
    #: whether the model decides at thresholds chosen on validation (then it needs validation predictions)
    thresholds: bool = False
    #: ``predictions/<model>-s<seed><suffix>.csv`` (the columns differ per task: ``evaluation.results``)
    predictions_suffix: str = ""
    #: whether GPU training uses channels-last (fixed-size image batches) and cuDNN autotuning (fixed shapes)
    fixed_shapes: bool = True
    #: seconds a model of this task costs a run beyond its clock budget (set-up, final validation, scoring, saving):
    #: the wall budget's prior (``engine.runner._WallBudget``; a classifier's 1-8 s on a 2-core fp32 EPYC)
    run_overhead_s: float = 8.0

    # ------------------------------------------------------------------------------------------ profile
    def settings(self, profile, name: str, n_train: int, image_size: int | None = None):
        """The model's TrainSettings in ``profile`` (``--image-size`` applies only where it means something)."""
        raise NotImplementedError

    def run_overhead(self, settings) -> float:
        """What a model trained with ``settings`` is expected to cost a run beyond its clock budget, before any
        model of this task has finished (:attr:`run_overhead_s`; the wall budget then scales it by what they cost)."""
        return self.run_overhead_s

    def model_kwargs(self, profile, settings) -> dict:
        """``create_model`` kwargs the profile (and the model's settings) give it (recorded with the weights)."""
        return {}

    # ------------------------------------------------------------------------------------------ data
    def cannot_use(self, records: list[dict]) -> str:
        """Why a model of this task cannot train on these records at all ("" when it can)."""
        return ""

    def trainable(self, ds: SpineDataset, name: str) -> SpineDataset:
        """The images a model of this task can learn from (all, by default)."""
        return ds

    def scorable(self, ds: SpineDataset) -> SpineDataset:
        """The images a model of this task can be scored on (all, by default)."""
        return ds

    def transform(self, model, image_size, train: bool) -> Callable:
        """The item transform the model trains (``train``) or predicts with."""
        raise NotImplementedError

    def input_size(self, model, settings) -> list[int]:
        """What the result row and the weights record report as the model's input."""
        return [int(v) for v in (settings.image_size or model.default_cfg["input_size"])]

    def train_data(self, model, ds: SpineDataset, settings, device, seed: int, rank: int = 0,
                   world: int = 1, transform: Callable | None = None) -> "TrainData":
        """The training set as the loop iterates it (``TrainData.batches(epoch)``), through ``transform`` (default:
        the task's training transform)."""
        tf = transform or self.transform(model, settings.image_size, train=True)
        return LoaderData(ds.with_transform(tf), settings.batch_size, seed, settings.num_workers, device, rank, world,
                          self.sampler_weights(ds))

    def sampler_weights(self, ds: SpineDataset) -> torch.Tensor | None:
        """Per-image sampling weights (None: a plain shuffle)."""
        return None

    def val_data(self, model, ds: SpineDataset, settings, device) -> Any:
        """The validation set in the form :meth:`validate` takes."""
        return ds.with_transform(self.transform(model, settings.image_size, train=False))

    # ------------------------------------------------------------------------------------------ training
    def loss(self, net, batch, data: "TrainData", device, settings) -> tuple[torch.Tensor, dict]:
        """(loss to minimise, {name: float} parts to log) of one batch; ``net`` may be DDP-wrapped."""
        raise NotImplementedError

    def validate(self, model, val, device, settings) -> tuple[dict, Any]:
        """({key: value} for the epoch's log row, including :attr:`monitor`; predictions kept for scoring)."""
        raise NotImplementedError

    def calibrate(self, model, ds: SpineDataset, settings, device, val_pred: Any = None) -> dict:
        """Fit what a trained model sets on its validation films ``ds`` after training (saved in its weights), and
        say what was chosen ({} for nothing; the default). ``val_pred``: what :meth:`validate` kept of the selected
        epoch (None after a resume that skipped it)."""
        return {}

    # ------------------------------------------------------------------------------------------ inference
    def predict(self, model, ds: SpineDataset, device, batch_size: int = 16, progress: bool = False) -> Any:
        raise NotImplementedError

    def score(self, val_pred, test_pred, n_boot: int, seed: int) -> dict:
        """{"thresholds": chosen on ``val_pred`` (empty without :attr:`thresholds`), "metrics": the metrics of
        ``test_pred`` at them, with CIs (:meth:`score_at`)}."""
        return {"thresholds": [], "metrics": self.score_at(test_pred, (), n_boot, seed)}

    def score_at(self, pred, thresholds, n_boot: int, seed: int) -> dict:
        """Metrics of predictions at given decision thresholds (``evaluate`` passes the record's validated ones)."""
        raise NotImplementedError

    def forward_one(self, model, x: torch.Tensor):
        """One model input (no batch axis) through the model: what latency measures."""
        return model(x[None])

    def write_predictions(self, path, pred, scored: dict, ds: SpineDataset) -> None:
        """The per-image test predictions of a run (``predictions/<model>-s<seed>.csv``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ one image (demo)
    #: the predictor's first guess of a model's time per parameter, before it has measured it
    inference_cost: float = 1.0

    def prepare_inference(self, lm, example: np.ndarray, device, optimize: bool) -> None:
        """Ready a loaded model (``predict.predictor.LoadedModel``) for one-image inference, once."""

    def infer(self, lm, view: np.ndarray, scale: float, device, heatmaps: bool) -> tuple[dict, dict]:
        """(JSON-plain result, raw extras for drawing) of one downscaled view; ``scale`` = view px per image px."""
        raise NotImplementedError

    def draw(self, view: np.ndarray, result: dict, extra: dict) -> np.ndarray:
        """The model's picture of its result (uint8 RGB)."""
        raise NotImplementedError


class TrainData:
    """The training set as one loop iterates it: ``num_samples`` images, ``batches(epoch)`` in a seeded order.

    ``aux``: a train-time module beside the model (the classifiers' spine-shape head): the loop optimises its
    parameters with the model's, checkpoints its state and calls its ``close()`` when training ends; it is never
    part of the model, so the weights saved and served are the registered architecture's alone.
    """

    num_samples: int = 0
    batch_size: int = 1
    aux: torch.nn.Module | None = None

    def batches(self, epoch: int) -> Iterator:
        raise NotImplementedError

    def steps_per_epoch(self, world: int = 1) -> int:
        return max(1, math.ceil(self.num_samples / (self.batch_size * world)))

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.aux.parameters() if p.requires_grad] if self.aux is not None else []

    def state_dict(self) -> dict:
        return self.aux.state_dict() if self.aux is not None else {}

    def load_state_dict(self, state: dict | None) -> None:
        if self.aux is not None and state:
            self.aux.load_state_dict(state)

    def close(self) -> None:
        if self.aux is not None and hasattr(self.aux, "close"):
            self.aux.close()


class LoaderData(TrainData):
    """A transformed dataset behind a DataLoader: shuffled per epoch (seeded), weighted or DDP-sharded."""

    def __init__(self, ds: SpineDataset, batch_size: int, seed: int, num_workers: int, device, rank: int, world: int,
                 weights: torch.Tensor | None = None):
        self.ds, self.batch_size, self.seed, self.num_workers = ds, batch_size, seed, num_workers
        self.device, self.rank, self.world, self.weights = device, rank, world, weights
        self.num_samples = len(ds)

    def batches(self, epoch: int) -> Iterator:
        self.ds.set_epoch(epoch)
        g = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        if self.world > 1:
            sampler = torch.utils.data.distributed.DistributedSampler(self.ds, num_replicas=self.world,
                                                                      rank=self.rank, shuffle=True, seed=self.seed)
            sampler.set_epoch(epoch)
        elif self.weights is not None:
            sampler = torch.utils.data.WeightedRandomSampler(self.weights, len(self.ds), replacement=True,
                                                             generator=g)
        else:
            sampler = torch.utils.data.RandomSampler(self.ds, generator=g)
        return iter(DataLoader(self.ds, batch_size=self.batch_size, sampler=sampler, collate_fn=collate_dicts,
                               num_workers=self.num_workers, pin_memory=self.device.type == "cuda"))


def eval_loader(ds: SpineDataset, batches: list[list[int]], num_workers: int, device) -> DataLoader:
    """Prediction batches: ``batches`` lists the dataset indices of each (``ImageLevelTask.predict_batches``)."""
    ds.set_epoch(0)
    return DataLoader(ds, batch_sampler=batches, collate_fn=collate_dicts, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


def bce_from_probs(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return math.nan
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(y, p))
