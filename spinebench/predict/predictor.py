"""The predictor: every trained model on one radiograph (probabilities, decisions, boxes, heatmaps, angles).

This is the library behind the Gradio demo (``app.py`` only lays out components) and anything else that wants the
six models' opinion on a file::

    from spinebench.predict import Predictor
    pred = Predictor("weights")                 # loads every trained model once
    analysis = pred.analyze("spine.dcm")        # any file spinebench.io.load_image reads
    analysis.result                             # JSON-serialisable: one entry per model, agreement, timings
    analysis.images["cls_densenet121"]          # uint8 RGB: Grad-CAM of both findings over the model's view

What the models see is what they were trained on: the pixel contract of :func:`spinebench.io.load_image`, then
each model's :class:`~spinebench.weights.TrainedWeights` preprocessing (the training run's decode downscale, then
the model's evaluation transform), the same one ``evaluate`` and ``measure`` use. Classifiers return logits; the
sigmoid is applied here, once. Decisions use each model's thresholds chosen on the validation split of its training
run (its weights record), never 0.5 by default.

Speed (a 2-core CPU, see ``benchmarks/bench_demo.py``): the full-resolution image is decoded and downscaled once
and shared by all models (each model would otherwise resize the full image itself); the convolutional parts are
frozen TorchScript graphs (BatchNorm folded, oneDNN weights pre-packed); everything runs under
``torch.inference_mode`` except the classifiers' heads, where Grad-CAM needs gradients, and those come from the same
forward pass as the probabilities (``spinebench.gradcam``: no second forward, no backward through the backbone);
the models run in two single-threaded lanes (see :class:`Predictor`).

Research software, not a medical device: every result carries :data:`DISCLAIMER`.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from spinebench import DISCLAIMER, FINDINGS
from spinebench.engine.device import available_cores
from spinebench.errors import ImageLoadError, SpinebenchError
from spinebench.gradcam import GradCAM, trace_frozen
from spinebench.io import load_image
from spinebench.predict.cards import TASKS, panel_models
from spinebench.predict.drawing import render_model, summary_rows, to_uint8
from spinebench.weights import TrainedWeights, trained_records

log = logging.getLogger(__name__)

#: Fields of ``load_image``'s meta that may be shown: technical, never identifying.
SAFE_META = ("format", "modality", "height", "width", "bits_stored", "photometric", "pixel_spacing", "frames",
             "inverted", "window", "voi", "transfer_syntax")
#: Pixel budget of one uploaded image in the demo (a 6000 x 6000 radiograph is 36 MP).
DEMO_MAX_PIXELS = 50_000_000
#: Images smaller or more elongated than this are not radiographs the models can read (a 1 x 4000 strip would
#: break the detectors' strided backbones).
MIN_SIDE = 32
MAX_ASPECT = 8.0

# ------------------------------------------------------------------------------------------------ model loading
@dataclass
class LoadedModel:
    """One trained model ready to predict, with its weights record (preprocessing, thresholds, metrics)."""

    name: str
    task: str
    model: torch.nn.Module
    record: TrainedWeights
    thresholds: tuple[float, ...]
    cam: GradCAM | None = None

    @property
    def entry(self) -> dict:
        """The record as a manifest entry (what older callers read)."""
        return self.record.to_entry()

    @property
    def paper_name(self) -> str:
        return str(self.model.default_cfg.get("paper_name", ""))

    @cached_property
    def signals(self) -> dict[str, dict]:
        """Per finding: ``test_auroc`` and ``signal`` (:func:`finding_signal`), read once from the record."""
        return {f: dict(zip(("test_auroc", "signal"), finding_signal(self.record.metrics or {}, f)))
                for f in FINDINGS}


def set_cpu_threads(n: int | None = None) -> int:
    """Intra-op threads for torch (default: every available core); returns the number set."""
    torch.set_num_threads(max(1, int(n or available_cores())))
    return torch.get_num_threads()


class Predictor:
    """Every trained model of ``weights_dir``, loaded once; :meth:`analyze` runs all of them on one image.

    Args:
        weights_dir: folder with ``manifest.json`` and the weights files (``spinebench.weights``), or a Hub
            repository ``hf://user/name[@revision]`` (``spinebench.hub``).
        models: restrict to these names (default: every trained model of a known task).
        device: torch device (the demo uses the CPU).
        cache_side: override the training run's decode downscale (default: each record's ``cache_side``).
        heatmaps: compute Grad-CAM for the classifiers (cheap: see ``spinebench.gradcam``).
        threads: CPU cores to use (default: all available to the process).
        lanes: models run concurrently in this many threads, each op single- or few-threaded (default on a CPU:
            2 when 2+ cores). Why: the small classifiers scale poorly over intra-op threads, and on a shared CPU
            (a Space, a CI box) OpenMP's spin-waiting threads slow a 2-thread forward pass by 10x and more as soon
            as another process competes; independent single-threaded lanes neither waste cycles waiting nor stall.
            Models are placed on lanes longest-first by their measured times.
        optimize: freeze the convolutional parts for inference (classifier bodies, detector backbones and RPN
            heads: TorchScript trace + freeze + optimize_for_inference, about 1.5-2x faster on a CPU). Each frozen
            part is checked against its eager module when built and left eager if it differs; what the models
            compute is unchanged (float rounding aside).

    Thread safety: one analysis at a time (a lock); the demo's queue serialises requests anyway.
    """

    def __init__(self, weights_dir: str | os.PathLike, models: Sequence[str] | None = None, device: str = "cpu",
                 cache_side: int | None = None, heatmaps: bool = True, threads: int | None = None,
                 optimize: bool = True, lanes: int | None = None):
        from concurrent.futures import ThreadPoolExecutor

        from spinebench.hub import resolve_weights
        from spinebench.models import model_info
        from spinebench.tasks import get_task

        self.weights_dir = resolve_weights(weights_dir)
        self.device = torch.device(device)
        self.cores = int(threads or available_cores())
        self.lanes = int(lanes or (min(2, self.cores) if self.device.type == "cpu" else 1))
        self.threads = max(1, self.cores // self.lanes)  # intra-op threads of each lane (set in the lane threads)
        records = trained_records(self.weights_dir)
        available = list(records)
        order = panel_models()
        available = sorted(available, key=lambda n: order.index(n) if n in order else len(order))
        names = list(models) if models else available
        missing = [m for m in names if m not in available]
        if missing:
            raise SpinebenchError(f"no trained weights for {', '.join(missing)} in {self.weights_dir}")
        self.heatmaps = heatmaps
        self.models: dict[str, LoadedModel] = {}
        self.skipped: dict[str, str] = {}
        for name in names:
            try:
                task = model_info(name)["task"]
            except SpinebenchError as e:  # weights of a model this version does not know
                self.skipped[name] = str(e)
                continue
            if task not in TASKS:
                self.skipped[name] = f"task {task!r} is not shown by the predictor"
                continue
            rec = records[name]
            model = rec.load(self.device)
            lm = LoadedModel(name=name, task=task, model=model, record=rec,
                             thresholds=rec.decision_thresholds() if get_task(task).thresholds
                             else (math.nan, math.nan))
            get_task(task).prepare_inference(lm, _example_view(cache_side or rec.cache_side)[0].numpy(),
                                             self.device, optimize)
            self.models[name] = lm
        if not self.models:
            raise SpinebenchError(f"no usable trained models in {self.weights_dir}")
        sides = {m.record.cache_side for m in self.models.values()}
        if cache_side is None and len(sides) > 1:
            log.warning("models were trained at different cache sides %s; each gets its own", sorted(sides))
        self.cache_side = cache_side
        self.provenance = provenance(self.models)
        self._lock = threading.Lock()
        # first guess of each model's cost (replaced by measured times): detectors cost ~4x per parameter
        self._cost = {n: float(model_info(n)["params_m"]) * get_task(m.task).inference_cost
                      for n, m in self.models.items()}
        self._timed: set[str] = set()
        self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="spinebench-lane") if self.lanes > 1 \
            else None
        log.info("predictor: %d models from %s (%s)", len(self.models), self.weights_dir, ", ".join(self.models))

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def side_for(self, lm: LoadedModel) -> int:
        return int(self.cache_side or lm.record.cache_side)

    # -------------------------------------------------------------------------------------------- analysis
    def analyze(self, src, *, draw: bool = True, max_pixels: int = DEMO_MAX_PIXELS) -> "Analysis":
        """Run every model on one image (a path, bytes, or an already loaded ``(img, meta)`` pair).

        Raises :class:`~spinebench.errors.ImageLoadError` for files that are not a readable image.
        """
        t0 = time.perf_counter()
        if isinstance(src, tuple):
            img, meta = src
        else:
            img, meta = load_image(src, max_pixels=max_pixels)
        h, w = img.shape
        if min(h, w) < MIN_SIDE or max(h, w) / min(h, w) > MAX_ASPECT:
            raise ImageLoadError(f"a {w} x {h} px image is not a radiograph the models can read (at least "
                                 f"{MIN_SIDE} px a side and at most {MAX_ASPECT:g}:1 needed)")
        t_load = time.perf_counter()
        with self._lock:
            caller_threads = torch.get_num_threads()
            try:
                if self.device.type == "cpu":  # the downscale may use every core
                    torch.set_num_threads(self.cores)
                views: dict[int, tuple[np.ndarray, float]] = {}
                for lm in self.models.values():
                    side = self.side_for(lm)
                    if side not in views:  # one downscale shared by every model trained at this side
                        views[side] = lm.record.downscale(img, side)
                t_view = time.perf_counter()
                plan = self.plan()
                if self._pool is not None and len(plan) > 1:
                    done: dict = {}
                    for part in [f.result() for f in [self._pool.submit(self._run_lane, lane, views, draw)
                                                      for lane in plan]]:
                        done.update(part)
                else:
                    done = self._run_lane(list(self.models), views, draw)
            finally:
                torch.set_num_threads(caller_threads)  # torch's count is process-wide: give the caller theirs back
            for name, (out, _, _) in done.items():
                if "error" not in out:  # running estimate of each model's time, for the lane plan
                    old = self._cost[name] if name in self._timed else out["ms"]
                    self._cost[name] = 0.7 * old + 0.3 * out["ms"]
                    self._timed.add(name)
        t_models = time.perf_counter()
        results = {n: done[n][0] for n in self.models}
        raw = {n: done[n][1] for n in self.models}
        main_side = max(views)
        view, scale = views[main_side]
        info = {k: _jsonable(meta.get(k)) for k in SAFE_META if k in meta}
        info["model_view"] = [int(view.shape[0]), int(view.shape[1])]
        result = {
            "disclaimer": DISCLAIMER,
            "image": info,
            "models": results,
            "agreement": agreement(results),
            "provenance": {"spinebench_version": self.provenance["spinebench_version"],
                           "models": {n: dict(v) for n, v in self.provenance["models"].items()}},
            "timing_ms": {"load": round((t_load - t0) * 1000, 1), "downscale": round((t_view - t_load) * 1000, 1),
                          "models": round((t_models - t_view) * 1000, 1)},
        }
        analysis = Analysis(result=result, view=view, raw=raw, scale=scale, views=views)
        if draw:
            analysis.images["input"] = to_uint8(view)
            analysis.images.update({n: done[n][2] for n in self.models})
        result["timing_ms"]["total"] = round((time.perf_counter() - t0) * 1000, 1)
        return analysis

    def plan(self) -> list[list[str]]:
        """Models per lane, longest first onto the least loaded lane (LPT scheduling)."""
        lanes: list[list[str]] = [[] for _ in range(self.lanes)]
        load = [0.0] * self.lanes
        for name in sorted(self.models, key=lambda n: -self._cost[n]):
            i = load.index(min(load))
            lanes[i].append(name)
            load[i] += self._cost[name]
        return [lane for lane in lanes if lane]

    def _run_lane(self, names: Sequence[str], views: dict, draw: bool) -> dict[str, tuple[dict, dict, object]]:
        if self.device.type == "cpu":
            # set in the lane itself: torch's count is process-wide, but OpenMP (oneDNN) also reads this thread's own
            torch.set_num_threads(self.threads)
        out = {}
        for name in names:
            lm = self.models[name]
            view, scale = views[self.side_for(lm)]
            ts = time.perf_counter()
            try:
                res, extra = self._run_one(lm, view, scale)
            except SpinebenchError as e:
                res, extra = {"task": lm.task, "error": str(e)}, {}
            except Exception as e:  # noqa: BLE001 - one model failing must not take the other five down
                log.exception("%s failed on a %s x %s view", name, *view.shape)
                res, extra = {"task": lm.task, "error": f"{name} failed ({type(e).__name__})"}, {}
            res["ms"] = round((time.perf_counter() - ts) * 1000, 1)
            out[name] = (res, extra, render_model(view, res, extra) if draw else None)
        return out

    def _run_one(self, lm: LoadedModel, view: np.ndarray, scale: float) -> tuple[dict, dict]:
        from spinebench.tasks import get_task

        res, extra = get_task(lm.task).infer(lm, view, scale, self.device, self.heatmaps)
        for f in FINDINGS:  # how far each call can be trusted, as its own test split measured it
            if isinstance(res.get(f), dict):
                res[f] = {**res[f], **lm.signals[f]}
        return {"task": lm.task, "paper_name": lm.paper_name, **res}, extra

    def warmup(self) -> None:
        """One full pass so that the first visitor does not pay for lazy initialisation (decoder plugins, oneDNN
        kernels, fonts): on the shipped DICOM example when present, else on a blank image."""
        examples = sorted((Path(__file__).resolve().parent.parent / "assets" / "examples").glob("*.dcm"))
        if examples:
            self.analyze(str(examples[0]), draw=True)
            return
        img = np.zeros((512, 256), dtype=np.float32)
        img[128:384, 64:192] = 0.6
        self.analyze((img, {"format": "png", "height": 512, "width": 256}), draw=True)


def _example_view(side: int) -> torch.Tensor:
    """A (1, side, side // 2) image with structure, to trace models on (a spine radiograph is about 1:2.5)."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, side, max(32, side // 2), generator=g)


class _Frozen(torch.nn.Module):
    """A frozen TorchScript module standing in for the eager one (keeps attributes the caller reads)."""

    def __init__(self, frozen, **attrs):
        super().__init__()
        self.frozen = frozen
        for k, v in attrs.items():
            setattr(self, k, v)

    def forward(self, *args):
        return self.frozen(*args)


def optimize_detector(model: torch.nn.Module, example: torch.Tensor) -> bool:
    """Freeze a torchvision detector's backbone (+FPN) and RPN head in place (see Predictor's ``optimize``).

    The region proposals, RoI pooling and box head stay eager: their shapes depend on the data. Returns whether the
    backbone was frozen.
    """
    with torch.inference_mode():
        images, _ = model.transform([example])
    x = images.tensors.clone()
    frozen = trace_frozen(model.backbone, x)
    if frozen is None:
        return False
    model.backbone = _Frozen(frozen, out_channels=model.backbone.out_channels)
    with torch.inference_mode():
        feats = [f.clone() for f in model.backbone(x).values()]
    head = trace_frozen(model.rpn.head, (feats,))
    if head is not None:
        model.rpn.head = _Frozen(head)
    return True


def provenance(models: dict[str, LoadedModel]) -> dict:
    """Where every answer comes from: this spinebench's version and, per model, its weights record's facts (file
    sha256, training run, data kind, whether ImageNet/COCO weights were loaded before training)."""
    from spinebench import __version__

    return {"spinebench_version": __version__,
            "models": {n: {"weights_sha256": lm.record.sha256, "run_id": lm.record.run_id,
                           "data_kind": lm.record.data_kind, "pretrained": lm.record.pretrained,
                           "trained_with": lm.record.spinebench_version, "git_commit": lm.record.git_commit}
                       for n, lm in models.items()}}


def finding_signal(metrics: dict, finding: str) -> tuple[float | None, bool | None]:
    """(test AUROC, better than chance?) of a model's calls on ``finding``, from its weights record's test metrics.

    Better than chance: the 95% bootstrap interval of the AUROC lies above 0.5 (the point estimate, where the record
    has no interval). (None, None) where the record holds no AUROC (a test split without both classes): nothing is
    known, and the call counts. Why: a quick run's detectors score every film's scoliosis near their training prior
    (test AUROC 0.22-0.38, docs/results.md session 43), so their scoliosis calls are coin flips; the demo shows
    them, marked, and leaves them out of the models' agreement instead of letting them outvote the classifiers.
    """
    auc, lo = metrics.get(f"{finding}_auroc"), metrics.get(f"{finding}_auroc_lo")
    if not isinstance(auc, (int, float)) or not math.isfinite(auc):
        return None, None
    known_lo = isinstance(lo, (int, float)) and math.isfinite(lo)
    return round(float(auc), 3), bool((lo if known_lo else auc) > 0.5)


def decide(probs: Sequence[float], thresholds: Sequence[float]) -> dict:
    """Per finding: probability, the model's validated threshold, and the decision ``probability >= threshold``."""
    out = {}
    for j, finding in enumerate(FINDINGS):
        p, t = float(probs[j]), float(thresholds[j])
        out[finding] = {"probability": round(p, 4), "threshold": round(t, 4), "positive": bool(p >= t)}
    return out


def agreement(models: dict) -> dict:
    """How many models agree, per finding and on both: the majority decision and its count.

    A model whose calls on a finding were no better than chance on its own test split (``"signal": False``,
    :func:`finding_signal`) does not vote on that finding (``left_out`` counts them), nor on both."""
    voters = {n: r for n, r in models.items() if all(isinstance(r.get(f), dict) for f in FINDINGS)}
    out: dict = {"models": len(voters)}
    for f in FINDINGS:
        counted = [r for r in voters.values() if r[f].get("signal") is not False]
        pos = sum(bool(r[f]["positive"]) for r in counted)
        neg = len(counted) - pos
        out[f] = {"positive": pos, "negative": neg, "left_out": len(voters) - len(counted),
                  "majority": "present" if pos > neg else "absent" if neg > pos else "split", "agree": max(pos, neg)}
    both = [r for r in voters.values() if all(r[f].get("signal") is not False for f in FINDINGS)]
    if both:
        combos: dict[tuple, int] = {}
        for r in both:
            key = tuple(bool(r[f]["positive"]) for f in FINDINGS)
            combos[key] = combos.get(key, 0) + 1
        best = max(combos.values())
        out["both"] = {"agree": best, "of": len(both), "unanimous": best == len(both)}
    else:
        out["both"] = {"agree": 0, "of": 0, "unanimous": False}
    return out


def _jsonable(v):
    if isinstance(v, (np.generic,)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


# ------------------------------------------------------------------------------------------------ drawing
@dataclass
class Analysis:
    """What :meth:`Predictor.analyze` returns: the JSON ``result`` and pictures for people."""

    result: dict
    view: np.ndarray                      # float32 (h, w): the image as the models see it
    raw: dict = field(default_factory=dict, repr=False)
    scale: float = 1.0
    views: dict = field(default_factory=dict, repr=False)
    images: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # "input" and one per model

    def render(self, predictor: Predictor) -> None:
        """Draw the pictures of an analysis made with ``draw=False``."""
        self.images["input"] = to_uint8(self.view)
        for name, r in self.result["models"].items():
            view, _ = self.views[predictor.side_for(predictor.models[name])]
            self.images[name] = render_model(view, r, self.raw.get(name) or {})

    def summary_rows(self) -> list[list]:
        return summary_rows(self.result)

    def release(self) -> None:
        """Drop pixel data as soon as the pictures are out (privacy: nothing of the upload is kept)."""
        self.view = np.zeros((0, 0), np.float32)
        self.views.clear()
        self.raw.clear()
        self.images.clear()



@lru_cache(maxsize=4)
def get_predictor(weights_dir: str, device: str = "cpu") -> Predictor:
    """The process-wide predictor of ``weights_dir``: models are loaded once and stay cached."""
    p = Predictor(weights_dir, device=device)
    p.warmup()
    return p
