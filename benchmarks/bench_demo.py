"""End-to-end latency of the demo's analysis: every trained model on one full-resolution X-ray, file to result.

Two paths, run alternately on the same file so that both see the same machine load:

* ``naive``: what a first implementation does. The full-resolution image goes to each model separately: every
  classifier resizes it to its own input, runs with autograd on and back-propagates through the whole network once
  per finding for Grad-CAM (as generic Grad-CAM libraries do); every detector gets the full-resolution image and
  resizes it inside (torchvision's transform), under ``torch.no_grad``.
* ``optimised``: :meth:`spinebench.predict.Predictor.analyze` as the demo calls it (drawing included): one decode,
  one shared downscale to the training profile's side (what the models were trained on), frozen TorchScript
  backbones, ``inference_mode``, Grad-CAM from the same forward pass through the head only, and the models spread
  over two single-threaded lanes.
* ``sequential`` (ablation): the same, but the models one after another with all cores as intra-op threads.

Both compute the same models with the same weights; the optimised path feeds them exactly what training fed them
(the naive path resizes from full resolution, which differs slightly: the largest probability difference is
printed). Default input: a synthetic radiograph upscaled to 2,500 x ~1,150 px and written as a 12-bit DICOM (a
typical CR/DX size); ``--image`` takes any file (e.g. an AASCE JPEG). Default weights: ``weights/`` when it holds
trained models, else random-init models of the quick profile's sizes (latency does not depend on weight values).

    python benchmarks/bench_demo.py                      # p50/p95 of both paths, per-model times
    python benchmarks/bench_demo.py --repeats 30 --csv benchmarks/demo_latency.csv
"""

from __future__ import annotations

import argparse
import csv
import logging
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spinebench import FINDINGS  # noqa: E402
from spinebench.engine.weights import load_weights, save_weights, trained_models  # noqa: E402
from spinebench.io import load_image  # noqa: E402
from spinebench.predict import Predictor, available_cores, default_weights_dir, set_cpu_threads  # noqa: E402

log = logging.getLogger("bench_demo")


def make_weights(out: Path) -> Path:
    """Random-init weights of every classifier and detector, at the quick profile's sizes."""
    from spinebench.engine.profiles import get_profile
    from spinebench.models import create_model, list_models, model_info
    from spinebench.tasks import get_task

    prof = get_profile("quick")
    torch.manual_seed(0)
    for name in list_models():
        task = model_info(name)["task"]
        if task not in ("classification", "detection"):
            continue
        settings = prof.settings_for(name, 100)
        kwargs = get_task(task).model_kwargs(prof, settings)
        size = list(settings.image_size) if settings.image_size else None
        save_weights(create_model(name, pretrained="none", **kwargs), out,
                     meta={"model": name, "task": task, "thresholds": [0.5, 0.5, 0.5], "image_size": size,
                           "model_kwargs": kwargs, "run_id": "bench-quick", "data": "synth", "pretrained": False})
    return out


def make_image(out: Path, long_side: int = 2500) -> Path:
    """A synthetic radiograph upscaled to a real detector's size, as a 12-bit DICOM."""
    import torch.nn.functional as F

    from spinebench.data import synth

    img, _ = synth.render_image(0, 3, 0)
    h, w = img.shape
    size = (long_side, round(w * long_side / h))
    big = F.interpolate(torch.from_numpy(img)[None, None], size=size, mode="bicubic", align_corners=False)
    return synth.write_image(big[0, 0].clamp(0, 1).numpy(), out / "bench_xray", "dcm12")


class Naive:
    """The first-implementation path (see the module docstring)."""

    def __init__(self, weights_dir: Path, names: list[str]):
        from spinebench.engine.train import transforms_for

        self.models = []
        for name in names:
            model, entry = load_weights(name, weights_dir, "cpu")
            size = tuple(entry["image_size"]) if entry.get("image_size") else None
            self.models.append((name, model.default_cfg["task"], model,
                                transforms_for(model, size, train=False), entry))

    def __call__(self, path: str) -> dict:
        from spinebench.gradcam import target_layer
        from spinebench.tasks.classification import mean_of_looks

        img, _ = load_image(path)
        x = torch.from_numpy(img)[None]
        out = {}
        for name, task, model, tf, _ in self.models:
            if task == "classification":
                model.requires_grad_(True)
                inp = tf({"image": x}, np.random.default_rng(0))["image"][None]
                layer, rectify = target_layer(model)
                store = {}

                def hook(mod, args, output, store=store):
                    store["act"] = output
                    output.register_hook(lambda g: store.__setitem__("grad", g))

                h = layer.register_forward_hook(hook)
                try:
                    logits = model(inp)
                    cams = []
                    for k in range(logits.shape[1]):
                        model.zero_grad(set_to_none=True)
                        logits[0, k].backward(retain_graph=k + 1 < logits.shape[1])
                        a, g = store["act"].detach(), store["grad"]
                        cams.append(torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1)))
                finally:
                    h.remove()
                    model.requires_grad_(False)
                with torch.no_grad():  # the mirror image's look, as every classifier prediction takes it
                    logits = mean_of_looks(logits.detach(), model, inp)
                out[name] = torch.sigmoid(logits)[0].numpy()
            else:
                from spinebench.evaluation.metrics import image_scores_from_detections

                with torch.no_grad():
                    det = model([x])[0]
                out[name] = image_scores_from_detections([det], 1)[0]
        return out


def cpu_pressure() -> float | None:
    """Share of the last 10 s in which some runnable task waited for a CPU (Linux PSI), in %; None elsewhere."""
    try:
        with open("/proc/pressure/cpu") as f:
            return float(f.readline().split("avg10=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def wait_for_idle(limit: float, timeout: float) -> float | None:
    """Wait (at most ``timeout`` s) until other processes leave the CPU alone: a shared machine otherwise times
    its neighbours, not this code."""
    end = time.monotonic() + timeout
    p = cpu_pressure()
    while p is not None and p > limit and time.monotonic() < end:
        time.sleep(2)
        p = cpu_pressure()
    return p


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="weights folder (default: weights/ if trained, else random-init models)")
    ap.add_argument("--image", help="X-ray to analyse (default: a 2,500 px synthetic 12-bit DICOM)")
    ap.add_argument("--repeats", type=int, default=15, help="timed runs of each path (default 15)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="CPU cores to use (default: all available)")
    ap.add_argument("--csv", help="append one summary row per path to this CSV")
    ap.add_argument("--idle", type=float, default=None, metavar="PCT",
                    help="before each round wait (up to --idle-timeout s) until CPU pressure (PSI avg10) is below PCT "
                         "%%, so that a shared machine's other jobs are not timed; rounds still pressured are counted")
    ap.add_argument("--idle-timeout", type=float, default=120.0)
    ap.add_argument("--paths", default="naive,optimised,sequential",
                    help="comma-separated paths to time (naive, optimised, sequential)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    tmp = Path(tempfile.mkdtemp(prefix="bench_demo_"))
    try:
        return _run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args, tmp: Path) -> int:
    wdir = Path(args.weights) if args.weights else default_weights_dir()
    if not trained_models(wdir):
        wdir = make_weights(tmp / "weights")
        print(f"weights: random-init models of the quick profile's sizes in {wdir}")
    image = args.image or str(make_image(tmp))
    img, meta = load_image(image)
    cores = args.threads or available_cores()
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    print(f"image: {meta['format']} {img.shape[1]} x {img.shape[0]} px; torch {torch.__version__}, "
          f"{cores} cores, {platform.processor() or platform.machine()}")

    from spinebench.models import model_info

    six = [n for n in trained_models(wdir) if model_info(n)["task"] in ("classification", "detection")]
    t0 = time.perf_counter()
    pred = Predictor(wdir, models=six, threads=cores)
    print(f"models: {', '.join(pred.names)} (loaded and optimised in {time.perf_counter() - t0:.1f} s); "
          f"optimised: {pred.lanes} lanes x {pred.threads} threads")
    seq = Predictor(wdir, models=six, threads=cores, lanes=1) if "sequential" in paths else None
    naive = Naive(wdir, pred.names) if "naive" in paths else None

    times: dict[str, list[float]] = {p: [] for p in paths}
    per_model: dict[str, list[float]] = {n: [] for n in pred.names}
    diffs = []
    pressured = 0
    for i in range(args.warmup + args.repeats):
        timed = i >= args.warmup
        if args.idle is not None and timed:
            before = wait_for_idle(args.idle, args.idle_timeout)
            pressured += int(before is not None and before > args.idle)
        ref = None
        if naive is not None:
            set_cpu_threads(cores)  # a naive program keeps torch's default: every core, intra-op
            t = time.perf_counter()
            ref = naive(image)
            if timed:
                times["naive"].append((time.perf_counter() - t) * 1000)
        if seq is not None:
            t = time.perf_counter()
            seq.analyze(image, draw=True).release()
            if timed:
                times["sequential"].append((time.perf_counter() - t) * 1000)
        if "optimised" in paths:
            t = time.perf_counter()
            a = pred.analyze(image, draw=True)
            dt = time.perf_counter() - t
            if timed:
                times["optimised"].append(dt * 1000)
                for n, r in a.result["models"].items():
                    per_model[n].append(r["ms"])
                if ref is not None:
                    diffs.append(max(abs(float(ref[n][j]) - a.result["models"][n][f]["probability"])
                                     for n in pred.names for j, f in enumerate(FINDINGS)))
            a.release()

    rows = []
    if args.idle is not None:
        print(f"\nrounds started with CPU pressure above {args.idle:g}%: {pressured} of {args.repeats} "
              f"(pressure now {cpu_pressure()}%)")
    print(f"\n{'path':<10} {'p50 ms':>9} {'p95 ms':>9} {'mean ms':>9} {'min ms':>9}  runs")
    for path, ts in times.items():
        if not ts:
            continue
        row = {"path": path, "p50_ms": round(percentile(ts, 50), 1), "p95_ms": round(percentile(ts, 95), 1),
               "mean_ms": round(statistics.fmean(ts), 1), "min_ms": round(min(ts), 1), "runs": len(ts),
               "cores": cores, "image": f"{img.shape[1]}x{img.shape[0]} {meta['format']}",
               "models": len(pred.names), "torch": torch.__version__}
        rows.append(row)
        print(f"{path:<10} {row['p50_ms']:>9.1f} {row['p95_ms']:>9.1f} {row['mean_ms']:>9.1f} {row['min_ms']:>9.1f}"
              f"  {row['runs']}")
    if times.get("naive") and times.get("optimised"):
        print(f"speed-up (p50): {percentile(times['naive'], 50) / percentile(times['optimised'], 50):.2f}x; "
              f"largest probability difference naive vs optimised: {max(diffs):.4f} (the naive path resizes from "
              "full resolution, not from the downscale the models were trained on)")
    if any(per_model.values()):
        print("\noptimised, per model (p50 ms, lanes run concurrently): "
              + ", ".join(f"{n} {statistics.median(v):.0f}" for n, v in per_model.items()))
    if args.csv:
        new = not Path(args.csv).exists()
        with open(args.csv, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            if new:
                w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
