"""Prediction with every trained model on one radiograph: probabilities, decisions, boxes, heatmaps, drawings.

This is the library behind the Gradio demo (``app.py`` only lays out components) and anything else that wants the
six models' opinion on a file::

    from spinebench.predict import Predictor
    pred = Predictor("weights")                 # loads every trained model once
    analysis = pred.analyze("spine.dcm")        # any file spinebench.io.load_image reads
    analysis.result                             # JSON-serialisable: one entry per model, agreement, timings
    analysis.images["cls_densenet121"]          # uint8 RGB: Grad-CAM of both findings over the model's view

What the models see is what they were trained on: the pixel contract of :func:`spinebench.io.load_image`, the
same aspect-kept downscale to the training profile's ``cache_side`` (``spinebench.data.dataset``), then each
model's own evaluation transform (``spinebench.engine.train.transforms_for``). Classifiers return logits; the
sigmoid is applied here, once. Decisions use each model's thresholds chosen on the validation split of its training
run (weights manifest), never 0.5 by default.

Speed (a 2-core CPU, see ``benchmarks/bench_demo.py``): the full-resolution image is decoded and downscaled once
and shared by all models (each model would otherwise resize the full image itself); the convolutional parts are
frozen TorchScript graphs (BatchNorm folded, oneDNN weights pre-packed); everything runs under
``torch.inference_mode`` except the classifiers' heads, where Grad-CAM needs gradients, and those come from the same
forward pass as the probabilities (``spinebench.gradcam``: no second forward, no backward through the backbone);
the models run in two single-threaded lanes (see :class:`Predictor`).

Research software, not a medical device: every result carries :data:`DISCLAIMER`.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from spinebench import FINDING_LABELS, FINDINGS, LABEL_NAMES
from spinebench.data.dataset import _resize_keep_aspect
from spinebench.engine.device import available_cores
from spinebench.engine.profiles import profile_cache_side
from spinebench.engine.train import transforms_for
from spinebench.engine.weights import load_weights, read_weights_manifest, trained_models
from spinebench.errors import ImageLoadError, SpinebenchError
from spinebench.gradcam import GradCAM, trace_frozen, upsample
from spinebench.io import load_image

log = logging.getLogger(__name__)

DISCLAIMER = ("Research tool, not a diagnosis. These models were trained on small, largely synthetic data; their "
              "outputs must not be used for clinical decisions.")
#: Fields of ``load_image``'s meta that may be shown: technical, never identifying.
SAFE_META = ("format", "modality", "height", "width", "bits_stored", "photometric", "pixel_spacing", "frames",
             "inverted", "window", "voi", "transfer_syntax")
#: Tasks the predictor knows how to run; other registered tasks are ignored.
TASKS = ("classification", "detection", "cobb")
#: Pixel budget of one uploaded image in the demo (a 6000 x 6000 radiograph is 36 MP).
DEMO_MAX_PIXELS = 50_000_000
#: Images smaller or more elongated than this are not radiographs the models can read (a 1 x 4000 strip would
#: break the detectors' strided backbones).
MIN_SIDE = 32
MAX_ASPECT = 8.0

# colours (RGB) of the two findings, used for boxes and table badges
FINDING_COLOURS = {"implant": (255, 170, 0), "scoliosis": (0, 200, 255)}
LABEL_COLOURS = {1: FINDING_COLOURS["implant"], 2: FINDING_COLOURS["scoliosis"]}
_LABEL_FINDING = {label: finding for finding, label in FINDING_LABELS.items()}


# ------------------------------------------------------------------------------------------------ model loading
@dataclass
class LoadedModel:
    """One trained model ready to predict, with what its manifest says about it."""

    name: str
    task: str
    model: torch.nn.Module
    entry: dict
    thresholds: tuple[float, float]
    image_size: tuple[int, int] | None
    cam: GradCAM | None = None
    transform: object = None

    @property
    def paper_name(self) -> str:
        return str(self.model.default_cfg.get("paper_name", ""))


def _threshold_pair(entry: dict) -> tuple[float, float]:
    t = [float(v) for v in (entry.get("thresholds") or [0.5, 0.5])]
    if len(t) < len(FINDINGS) or not all(math.isfinite(v) for v in t[:len(FINDINGS)]):
        raise SpinebenchError(f"manifest entry {entry.get('model', '?')} has no valid thresholds: {t}")
    return t[0], t[1]


def set_cpu_threads(n: int | None = None) -> int:
    """Intra-op threads for torch (default: every available core); returns the number set."""
    torch.set_num_threads(max(1, int(n or available_cores())))
    return torch.get_num_threads()


class Predictor:
    """Every trained model of ``weights_dir``, loaded once; :meth:`analyze` runs all of them on one image.

    Args:
        weights_dir: folder with ``manifest.json`` and ``<model>.pt`` (``spinebench.engine.weights``).
        models: restrict to these names (default: every trained model of a known task).
        device: torch device (the demo uses the CPU).
        cache_side: override the training profile's downscale (default: from each manifest entry).
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

        from spinebench.models import model_info

        self.weights_dir = Path(weights_dir)
        self.device = torch.device(device)
        self.cores = int(threads or available_cores())
        self.lanes = int(lanes or (min(2, self.cores) if self.device.type == "cpu" else 1))
        self.threads = max(1, self.cores // self.lanes)  # intra-op threads of each lane (set in the lane threads)
        available = trained_models(self.weights_dir)
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
            model, entry = load_weights(name, self.weights_dir, self.device)
            size = tuple(int(v) for v in entry["image_size"]) if entry.get("image_size") else None
            lm = LoadedModel(name=name, task=task, model=model, entry=entry,
                             thresholds=_threshold_pair(entry) if task != "cobb" else (math.nan, math.nan),
                             image_size=size)
            example = _example_view(cache_side or profile_cache_side(entry))
            if task == "classification":
                lm.transform = transforms_for(model, size, train=False)
                x = lm.transform({"image": example}, np.random.default_rng(0))["image"][None].to(self.device)
                lm.cam = GradCAM(model, optimize=optimize and self.device.type == "cpu", example=x)
            elif task == "detection":
                lm.transform = transforms_for(model, None, train=False)
                if optimize and self.device.type == "cpu":
                    optimize_detector(model, example.to(self.device))
            self.models[name] = lm
        if not self.models:
            raise SpinebenchError(f"no usable trained models in {self.weights_dir}")
        sides = {profile_cache_side(m.entry) for m in self.models.values()}
        if cache_side is None and len(sides) > 1:
            log.warning("models were trained at different cache sides %s; each gets its own", sorted(sides))
        self.cache_side = cache_side
        self._lock = threading.Lock()
        # first guess of each model's cost (replaced by measured times): detectors cost ~4x per parameter
        self._cost = {n: float(model_info(n)["params_m"]) * (4.0 if m.task == "detection" else 1.0)
                      for n, m in self.models.items()}
        self._timed: set[str] = set()
        self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="spinebench-lane") if self.lanes > 1 \
            else None
        log.info("predictor: %d models from %s (%s)", len(self.models), self.weights_dir, ", ".join(self.models))

    @property
    def names(self) -> list[str]:
        return list(self.models)

    def side_for(self, lm: LoadedModel) -> int:
        return int(self.cache_side or profile_cache_side(lm.entry))

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
                        arr, scale = _resize_keep_aspect(img, side)
                        views[side] = (arr.astype(np.float32), scale)
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
        base = {"task": lm.task, "paper_name": lm.paper_name}
        x = torch.from_numpy(view)[None]  # (1, H, W): the dataset item's image
        if lm.task == "classification":
            item = lm.transform({"image": x}, np.random.default_rng(0))
            inp = item["image"][None].to(self.device)
            logits, cams = lm.cam(inp, cams=self.heatmaps)
            probs = torch.sigmoid(logits.float())[0].cpu().numpy()  # the one sigmoid, here
            out = dict(base, input_size=[int(s) for s in inp.shape[-2:]], **_decide(probs, lm.thresholds))
            return out, {"cams": cams[0].cpu().numpy() if cams is not None else None}
        if lm.task == "detection":
            from spinebench.evaluation.metrics import image_scores_from_detections

            item = lm.transform({"image": x}, np.random.default_rng(0))
            with torch.inference_mode():
                det = lm.model([item["image"].to(self.device)])[0]
            det = {k: v.detach().float().cpu() if k != "labels" else v.cpu() for k, v in det.items()}
            probs = image_scores_from_detections([det], 1)[0]
            boxes = []
            for box, label, score in zip(det["boxes"].numpy(), det["labels"].numpy(), det["scores"].numpy()):
                label = int(label)
                if label not in LABEL_NAMES:
                    continue
                boxes.append({"label": LABEL_NAMES[label], "finding": _LABEL_FINDING[label],
                              "score": round(float(score), 4),
                              "box": [round(float(v) / scale, 1) for v in box]})
            boxes.sort(key=lambda b: -b["score"])
            out = dict(base, **_decide(probs, lm.thresholds), boxes=boxes[:20])
            return out, {"det": det}
        if lm.task == "cobb":
            return self._run_cobb(lm, view, scale, base)
        raise SpinebenchError(f"{lm.name}: task {lm.task!r} is not supported")

    def _run_cobb(self, lm: LoadedModel, view: np.ndarray, scale: float, base: dict) -> tuple[dict, dict]:
        """The optional 7th model: vertebra corners -> the three Cobb angles (spinebench.measure, spinebench.cobb).

        Not counted in the agreement of the six: it measures, it does not give the two findings' probabilities.
        """
        from spinebench import SCOLIOSIS_COBB_DEG
        from spinebench.cobb import ANGLE_NAMES
        from spinebench.measure import measure_image, summarize

        pts, res = measure_image(lm.model, view, max_side=self.side_for(lm))
        out = dict(base, angles={k: round(float(a), 2) for k, a in zip(ANGLE_NAMES, res.angles)}, **summarize(res),
                   scoliosis_measured=bool(res.largest[1] >= SCOLIOSIS_COBB_DEG),
                   landmarks=np.round(pts / scale, 1).tolist())
        return out, {"landmarks": pts, "cobb": res}

    def warmup(self) -> None:
        """One full pass so that the first visitor does not pay for lazy initialisation (decoder plugins, oneDNN
        kernels, fonts): on the shipped DICOM example when present, else on a blank image."""
        examples = sorted((Path(__file__).resolve().parent / "assets" / "examples").glob("*.dcm"))
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


def _decide(probs: Sequence[float], thresholds: Sequence[float]) -> dict:
    """Per finding: probability, the model's validated threshold, and the decision ``probability >= threshold``."""
    out = {}
    for j, finding in enumerate(FINDINGS):
        p, t = float(probs[j]), float(thresholds[j])
        out[finding] = {"probability": round(p, 4), "threshold": round(t, 4), "positive": bool(p >= t)}
    return out


def agreement(models: dict) -> dict:
    """How many models agree, per finding and on both: the majority decision and its count."""
    voters = {n: r for n, r in models.items() if all(isinstance(r.get(f), dict) for f in FINDINGS)}
    out: dict = {"models": len(voters)}
    for f in FINDINGS:
        pos = sum(bool(r[f]["positive"]) for r in voters.values())
        neg = len(voters) - pos
        out[f] = {"positive": pos, "negative": neg,
                  "majority": "present" if pos > neg else "absent" if neg > pos else "split", "agree": max(pos, neg)}
    if voters:
        combos: dict[tuple, int] = {}
        for r in voters.values():
            key = tuple(bool(r[f]["positive"]) for f in FINDINGS)
            combos[key] = combos.get(key, 0) + 1
        best = max(combos.values())
        out["both"] = {"agree": best, "unanimous": best == len(voters)}
    else:
        out["both"] = {"agree": 0, "unanimous": False}
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


def render_model(view: np.ndarray, r: dict, extra: dict) -> np.ndarray:
    """One model's picture: boxes (detectors), Grad-CAM of both findings (classifiers), corners and Cobb lines."""
    if "error" in r:
        return caption(gray_rgb(view), r["error"])
    if r["task"] == "classification":
        return cam_panel(view, extra.get("cams"), r)
    if r["task"] == "detection":
        return draw_boxes(view, extra.get("det"), r)
    return _cobb_overlay(view, extra)


def summary_rows(result: dict) -> list[list]:
    """One row per model: model, then per finding its probability and the decision at the model's threshold, then
    the time in ms (the Cobb model: its largest angle and grade in the scoliosis decision column)."""
    rows = []
    for name, r in result["models"].items():
        if r.get("task") == "cobb" and "largest" in r:
            rows.append([name, None, "", None, f"Cobb {r['largest']:.1f}° {r['largest_curve'].upper()}, {r['grade']}",
                         r.get("ms")])
            continue
        row: list = [name]
        for f in FINDINGS:
            d = r.get(f)
            if isinstance(d, dict):
                row += [d["probability"], f"{'PRESENT' if d['positive'] else 'absent'} (t={d['threshold']:.2f})"]
            else:
                row += [None, r.get("error", "—")]
        rows.append(row + [r.get("ms")])
    return rows


SUMMARY_HEADERS = ["model", "implant p", "implant", "scoliosis p", "scoliosis", "ms"]


def agreement_text(result: dict) -> str:
    """One short paragraph: how many of the models agree, and the disclaimer."""
    a = result["agreement"]
    n = a["models"]
    if not n:
        return "No model produced a decision."
    parts = [f"the models are **split {a[f]['positive']}-{a[f]['negative']}** on {f}" if a[f]["majority"] == "split"
             else f"**{a[f]['agree']} of {n}** models agree that {f} is **{a[f]['majority']}**" for f in FINDINGS]
    both = a["both"]
    tail = "all models agree on both findings" if both["unanimous"] else \
        f"{both['agree']} of {n} give the same decision on both findings"
    text = "; ".join(parts) + f"; {tail}."
    return text[0].upper() + text[1:] + f"\n\n*{DISCLAIMER}*"


def image_facts(result: dict) -> str:
    """The upload's technical facts (never identity) and the time taken, as one short Markdown paragraph."""
    shown = ("format", "modality", "height", "width", "bits_stored", "photometric", "window", "inverted",
             "model_view")
    facts = " · ".join(f"{k.replace('_', ' ')}: {v}" for k, v in result["image"].items()
                       if k in shown and v not in (None, "", False))
    t = result["timing_ms"]
    return f"{facts}  \nAll models: {t['total']:.0f} ms (reading the file {t['load']:.0f} ms)."


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(img, dtype=np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def gray_rgb(img: np.ndarray) -> np.ndarray:
    g = to_uint8(img)
    return np.repeat(g[..., None], 3, axis=2)


# a perceptually ordered blue -> cyan -> green -> yellow -> red map (no matplotlib dependency)
_CMAP_X = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_CMAP_RGB = np.array([[48, 18, 59], [40, 160, 230], [60, 230, 110], [250, 200, 40], [200, 20, 10]], dtype=np.float32)


def colormap(x: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) float32 RGB in [0, 255]."""
    x = np.clip(x, 0, 1)
    return np.stack([np.interp(x, _CMAP_X, _CMAP_RGB[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def overlay_heatmap(img: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Grey image with a heatmap blended in where it is strong (weak regions stay readable)."""
    base = gray_rgb(img).astype(np.float32)
    a = (alpha * np.clip(heat, 0, 1) ** 0.7)[..., None]
    return (base * (1 - a) + colormap(heat) * a + 0.5).clip(0, 255).astype(np.uint8)


def _font(size: int = 12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _label(draw, xy, text: str, fill, font, anchor_bottom: bool = False) -> None:
    x, y = xy
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    w, h = r - l + 4, b - t + 4
    y0 = y - h if anchor_bottom else y
    draw.rectangle([x, y0, x + w, y0 + h], fill=(0, 0, 0))
    draw.text((x + 2, y0 + 2 - t), text, fill=fill, font=font)


def caption(rgb: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.fromarray(rgb)
    d = ImageDraw.Draw(im)
    _label(d, (2, 2), text[:80], (255, 255, 255), _font(max(10, rgb.shape[1] // 28)))
    return np.asarray(im)


#: Overlays are drawn on the view enlarged to about this height, so labels stay legible (the view itself is shown
#: as the models see it).
DISPLAY_HEIGHT = 640


def display_view(view: np.ndarray) -> tuple[np.ndarray, float]:
    """The model's view enlarged (bilinear) to about DISPLAY_HEIGHT for drawing; (image, factor)."""
    h, w = view.shape
    f = max(1.0, DISPLAY_HEIGHT / h)
    if f == 1.0:
        return view, 1.0
    t = torch.from_numpy(np.ascontiguousarray(view, dtype=np.float32))[None, None]
    big = torch.nn.functional.interpolate(t, size=(round(h * f), round(w * f)), mode="bilinear", align_corners=False)
    return big[0, 0].clamp_(0, 1).numpy(), f


def _decision_lines(d, r: dict, h: int, font, findings: Sequence[str] = FINDINGS, note: str | None = None) -> None:
    """Bottom-left (the top is under the viewer's title bar): an optional grey note, then each finding's
    probability and decision, in the finding's colour when present."""
    line = font.size + 6
    lines = ([(note, (220, 220, 220))] if note else []) + [
        (f"{f} {r[f]['probability']:.2f} {'PRESENT' if r[f]['positive'] else 'absent'}",
         FINDING_COLOURS[f] if r[f]["positive"] else (200, 200, 200)) for f in findings]
    for i, (text, colour) in enumerate(lines):
        _label(d, (2, h - 2 - (len(lines) - 1 - i) * line), text, colour, font, anchor_bottom=True)


def cam_panel(view: np.ndarray, cams: np.ndarray | None, r: dict) -> np.ndarray:
    """Grad-CAM of both findings side by side over the model's view, titled with probability and decision."""
    from PIL import Image, ImageDraw

    big, _ = display_view(view)
    h, w = big.shape
    panels = []
    font = _font(max(11, min(18, w // 10)))
    for j, f in enumerate(FINDINGS):
        heat = upsample(cams[j], (h, w)) if cams is not None else np.zeros((h, w), np.float32)
        im = Image.fromarray(overlay_heatmap(big, heat))
        _decision_lines(ImageDraw.Draw(im), r, h, font, findings=(f,))
        panels.append(np.asarray(im))
    gap = np.zeros((h, 6, 3), np.uint8)
    return np.concatenate([panels[0], gap, panels[1]], axis=1)


def draw_boxes(view: np.ndarray, det: dict | None, r: dict) -> np.ndarray:
    """Boxes at or above the model's threshold for their class, labelled ``Lum 0.93`` / ``sco 0.71``."""
    from PIL import Image, ImageDraw

    big, k = display_view(view)
    im = Image.fromarray(gray_rgb(big))
    d = ImageDraw.Draw(im)
    h, w = big.shape
    font = _font(max(11, min(18, w // 14)))
    shown = 0
    if det is not None:
        thr = {1: r["implant"]["threshold"], 2: r["scoliosis"]["threshold"]}
        for box, label, score in zip(det["boxes"].numpy(), det["labels"].numpy(), det["scores"].numpy()):
            label = int(label)
            if label not in thr or float(score) < thr[label]:
                continue
            x0, y0, x1, y1 = [float(v) * k for v in box]
            colour = LABEL_COLOURS[label]
            d.rectangle([x0, y0, x1, y1], outline=colour, width=max(2, w // 120))
            _label(d, (x0, max(0.0, y0)), f"{LABEL_NAMES[label]} {float(score):.2f}", colour, font,
                   anchor_bottom=y0 > 3 * font.size)
            shown += 1
    _decision_lines(d, r, h, font, note=None if shown else "no box above threshold")
    return np.asarray(im)


def _cobb_overlay(view: np.ndarray, extra: dict) -> np.ndarray:
    from spinebench.measure import render_overlay

    big, k = display_view(view)
    return render_overlay(big, np.asarray(extra["landmarks"]) * k, extra["cobb"])


# ------------------------------------------------------------------------------------------------ batch
BATCH_COLUMNS = ["index", "file", "model", "task", "implant_probability", "implant_threshold", "implant_positive",
                 "scoliosis_probability", "scoliosis_threshold", "scoliosis_positive", "boxes", "cobb_largest",
                 "cobb_grade", "ms", "error"]


def batch_rows(predictor: Predictor, files: Iterable, names: Iterable[str] | None = None) -> list[dict]:
    """One row per (file, model) for several files; an unreadable file becomes one ``error`` row."""
    rows = []
    files = list(files)
    names = list(names) if names is not None else [Path(str(f)).name for f in files]
    for i, (src, name) in enumerate(zip(files, names)):
        try:
            a = predictor.analyze(src, draw=False)
        except SpinebenchError as e:
            rows.append(dict.fromkeys(BATCH_COLUMNS, "") | {"index": i, "file": name, "error": _strip_path(str(e))})
            continue
        for model, r in a.result["models"].items():
            row = dict.fromkeys(BATCH_COLUMNS, "") | {"index": i, "file": name, "model": model, "task": r["task"],
                                                      "ms": r.get("ms", ""), "error": r.get("error", "")}
            for f in FINDINGS:
                if isinstance(r.get(f), dict):
                    row[f"{f}_probability"] = r[f]["probability"]
                    row[f"{f}_threshold"] = r[f]["threshold"]
                    row[f"{f}_positive"] = int(r[f]["positive"])
            if "boxes" in r:
                row["boxes"] = len(r["boxes"])
            if "largest" in r:
                row["cobb_largest"], row["cobb_grade"] = r["largest"], r["grade"]
            rows.append(row)
        a.release()
    return rows


def write_batch_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=BATCH_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


def _strip_path(msg: str) -> str:
    """Error lines name the file by its path; an upload's temporary path says nothing useful to a visitor."""
    return re.sub(r"^\S*[/\\]\S*?:\s", "", msg)


def user_message(err: BaseException) -> str:
    """The one line a visitor sees for a problem with their upload (no temporary paths)."""
    return _strip_path(str(err))


# ------------------------------------------------------------------------------------------------ weights
WEIGHTS_DIR_ENV = "SPINEBENCH_WEIGHTS_DIR"   # a local folder holding manifest.json + *.pt
WEIGHTS_REPO_ENV = "SPINEBENCH_WEIGHTS_REPO"  # a Hugging Face Hub repository id (model repo) with the same files


def default_weights_dir() -> Path:
    from spinebench.paths import repo_root

    return Path(os.environ.get(WEIGHTS_DIR_ENV) or repo_root() / "weights")


def ensure_weights(weights_dir: str | os.PathLike | None = None, *, hub_repo: str | None = None,
                   revision: str | None = None, train_profile: str = "quick", data: Sequence[str] = ("synth",),
                   results_dir: str | os.PathLike | None = None, runs_dir: str | os.PathLike | None = None,
                   progress: bool = True) -> Path:
    """A weights folder with trained models, whatever it takes: already there, from the Hub, or trained now.

    Order: ``weights_dir`` (default ``$SPINEBENCH_WEIGHTS_DIR`` or ``<repo>/weights``) when it holds trained models;
    else the Hugging Face Hub repository ``hub_repo`` (default ``$SPINEBENCH_WEIGHTS_REPO``) downloaded into it;
    else the ``train_profile`` profile trained on ``data`` (quick: about ten minutes on a 2-core CPU, offline, with
    progress bars), writing results to ``results_dir`` for the leaderboard.
    """
    from spinebench.paths import repo_root

    wdir = Path(weights_dir) if weights_dir else default_weights_dir()
    if trained_models(wdir):
        return wdir
    hub_repo = hub_repo or os.environ.get(WEIGHTS_REPO_ENV) or None
    if hub_repo:
        _download_hub_weights(hub_repo, wdir, revision or os.environ.get("SPINEBENCH_WEIGHTS_REVISION"))
        if trained_models(wdir):
            return wdir
        raise SpinebenchError(f"Hugging Face repository {hub_repo} holds no manifest.json with model files")
    from spinebench.engine.runner import run_all

    log.warning("no trained models in %s: training the %s profile on %s first (this takes a while)", wdir,
                train_profile, " ".join(data))
    root = repo_root()
    run_all(data=data, profile=train_profile, weights_dir=wdir, results=results_dir or root / "results",
            out=runs_dir or root / "runs", progress=progress)
    if not trained_models(wdir):
        raise SpinebenchError(f"training finished but no model was saved to {wdir}; see the run's error rows")
    return wdir


def _download_hub_weights(repo_id: str, wdir: Path, revision: str | None) -> None:
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise SpinebenchError("huggingface_hub is not installed: pip install huggingface-hub") from None
    log.info("downloading weights from the Hugging Face Hub repository %s", repo_id)
    try:
        snapshot_download(repo_id=repo_id, revision=revision, local_dir=str(wdir),
                          allow_patterns=["manifest.json", "*.pt", "leaderboard.csv"])
    except Exception as e:  # noqa: BLE001 - network, auth, missing repo: one line
        raise SpinebenchError(f"cannot download weights from {repo_id}: {type(e).__name__}: {e}") from None


@lru_cache(maxsize=4)
def get_predictor(weights_dir: str, device: str = "cpu") -> Predictor:
    """The process-wide predictor of ``weights_dir``: models are loaded once and stay cached."""
    p = Predictor(weights_dir, device=device)
    p.warmup()
    return p


# ------------------------------------------------------------------------------------------------ model cards
def _data_kind(spec: str) -> str:
    """synthetic / hybrid / real for every source of a (space-separated) data spec, e.g. ``synthetic + real``."""
    from spinebench.figures.report import data_kind

    kinds = list(dict.fromkeys(data_kind(part) for part in str(spec).split()))
    return " + ".join(kinds) or "unknown"


def data_label(spec: str) -> str:
    """A data spec without local paths (``aasce=/home/x/data`` -> ``aasce``)."""
    return " ".join(s.split("=", 1)[0] for s in str(spec).split()) or "unknown"


def model_card(name: str, entry: dict | None = None) -> str:
    """Markdown card of one model: architecture, parameters, training data, ImageNet weights, metrics, intended use."""
    from spinebench.models import model_info

    info = model_info(name)
    entry = entry or {}
    lines = [f"### {name}", f"*Paper's name: {info.get('paper_name') or '—'}; task: {info['task']}*", "",
             info.get("card", ""), "",
             f"- **Parameters:** {info['params_m']:.2f} M",
             f"- **Input size:** {'x'.join(str(v) for v in (entry.get('image_size') or entry.get('input_size') or info['input_size']))}"]
    if entry:
        spec = entry.get("data", "")
        lines += [f"- **Training data:** {data_label(spec)} ({_data_kind(spec)})",
                  f"- **ImageNet/COCO weights used:** {'yes' if entry.get('pretrained') else 'no (random init)'}",
                  f"- **Decision thresholds (chosen on validation):** implant "
                  f"{_threshold_pair(entry)[0]:.3f}, scoliosis {_threshold_pair(entry)[1]:.3f}"
                  if entry.get("thresholds") else "- **Decision thresholds:** —",
                  f"- **Training run:** {entry.get('run_id', '—')}"]
        metrics = entry.get("metrics") or {}
        keys = [k for k in ("any_sensitivity", "any_specificity", "accuracy", "loss", "implant_auroc",
                            "scoliosis_auroc", "map_50", "smape", "mae_pt", "mae_mt", "mae_tl") if k in metrics]
        if keys:
            lines += ["", "| metric | test value | 95% CI |", "| --- | --- | --- |"]
            for k in keys:
                lo, hi = metrics.get(f"{k}_lo"), metrics.get(f"{k}_hi")
                ci = f"{lo:.3f} – {hi:.3f}" if isinstance(lo, (int, float)) and isinstance(hi, (int, float)) \
                    and math.isfinite(lo) and math.isfinite(hi) else "—"
                v = metrics[k]
                lines.append(f"| {k} | {v:.3f} | {ci} |" if isinstance(v, (int, float)) and math.isfinite(v)
                             else f"| {k} | — | — |")
    else:
        lines.append("- **Trained weights:** none in this deployment")
    lines += ["", "**Intended use:** research and teaching only. Not a medical device; not for diagnosis."]
    return "\n".join(lines)


def model_cards(weights_dir: str | os.PathLike) -> dict[str, str]:
    """Cards of every registered model of a shown task, with manifest facts where trained."""
    from spinebench.models import list_models, model_info

    manifest = read_weights_manifest(weights_dir)
    return {n: model_card(n, manifest.get(n)) for n in list_models() if model_info(n)["task"] in TASKS}


# ------------------------------------------------------------------------------------------------ demo helpers
def panel_models() -> list[str]:
    """Registered models the demo gives a panel: detectors, then classifiers, then Cobb models (registry order)."""
    from spinebench.models import list_models

    return [n for task in ("detection", "classification", "cobb") for n in list_models(task)]


def results_file(results_dir: str | os.PathLike | None = None, weights_dir: str | os.PathLike | None = None
                 ) -> Path | None:
    """The leaderboard CSV to show: ``results/leaderboard.csv``, else one shipped beside the weights (Hub)."""
    from spinebench.paths import repo_root

    for path in (Path(results_dir or repo_root() / "results") / "leaderboard.csv",
                 Path(weights_dir or default_weights_dir()) / "leaderboard.csv"):
        if path.is_file():
            return path
    return None


def leaderboard_view(path: str | os.PathLike | None, data: str | None = None):
    """(data choices, leaderboard DataFrame, paper-vs-ours plotly figure) for the rows of one data set.

    ``data`` = None or "all" keeps every row; figures and table come from ``spinebench.figures``.
    """
    import pandas as pd

    from spinebench import figures
    from spinebench.evaluation.results import read_rows
    from spinebench.figures.plots import empty_figure

    if path is None:
        msg = "No results yet: run `python -m spinebench run-all` (or start the app once to train the quick profile)."
        return ["all"], pd.DataFrame({"message": [msg]}), empty_figure("Paper vs spinebench", msg)
    rows = read_rows(path)
    choices = ["all"] + sorted({data_label(r.get("data", "")) for r in rows if r.get("data", "") != ""})
    if data and data != "all":
        rows = [r for r in rows if data_label(r.get("data", "")) == data]
    from spinebench.models import model_info

    present = {r.get("model") for r in rows}
    models = [m for m in panel_models() if m in present and model_info(m)["task"] != "cobb"]
    table = figures.leaderboard_table(rows)
    if "Data" in table:
        table["Data"] = table["Data"].map(data_label)
    fig = figures.comparison_figure(rows, models, title=f"Paper vs spinebench ({data or 'all'} data)")
    return choices, table, fig
