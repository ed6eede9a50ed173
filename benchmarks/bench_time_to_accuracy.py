"""Time-to-accuracy of every model (DAWNBench style): how long training takes to reach the target on validation.

Each model is trained by ``run_all`` (the same code and profile as ``python -m spinebench run-all``) in its own
spawned process, so its peak memory and bytes written are its own. One row per model:

- ``seconds_to_target``: training seconds (cumulative, validation included) at the end of the first epoch whose
  validation metrics reach the target (classifiers: implant AUROC >= 0.97 and scoliosis AUROC >= 0.90;
  detectors: implant AUROC >= 0.90; Cobb: SMAPE <= 25%); empty when never reached. Detectors in the quick
  profile validate only after their last epoch, so theirs is "reached by the end or not".
- the final test metrics of the run-all row, training images/s, precision, peak memory and bytes written of the
  model's process;
- ``train_tflops`` and ``peak_fraction``: training FLOP/s (3 x the forward FLOPs at the training input, counted by
  torch's FLOP counter, x images/s) as a fraction of this machine's matrix-multiply rate in the training precision
  (fp32 or bf16), measured in the same run. A ratio holds on a noisy machine and says how close to the hardware
  each model trains.

Results: ``benchmarks/results/time_to_accuracy_<device>[-<tag>].csv``.

    python benchmarks/bench_time_to_accuracy.py                          # every model, quick profile, synth
    python benchmarks/bench_time_to_accuracy.py --models cls_resnet50 --data synth hybrid:aasce=PATH
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spinebench.models import model_info  # noqa: E402

log = logging.getLogger("bench_time_to_accuracy")

COLUMNS = ["model", "task", "device", "precision", "profile", "data", "target", "seconds_to_target",
           "epoch_to_target", "train_seconds", "epochs", "train_img_per_s", "train_tflops", "matmul_tflops",
           "peak_fraction", "peak_rss_mb", "bytes_written_mb", "wall_seconds", "any_sensitivity", "any_specificity",
           "implant_auroc", "scoliosis_auroc", "map_50", "smape", "status", "git_commit"]

TARGETS = {"classification": {"val_auroc_implant": 0.97, "val_auroc_scoliosis": 0.90},
           "detection": {"val_auroc_implant": 0.90},
           "cobb": {"val_smape": -25.0}}  # negative: lower is better


def matmul_tflops(seconds: float = 2.0, n: int = 2048, dtype: torch.dtype = torch.float32) -> float:
    """This machine's matrix-multiply rate (TFLOP/s) in ``dtype`` with torch's current thread count.

    Measured in the precision the models train in (bf16 on CPUs with AVX512-BF16/AMX): a bf16 run's FLOP/s over
    the fp32 peak would overstate how close it comes to the hardware's limit.
    """
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12


def _reached(row: dict, target: dict) -> bool:
    for key, goal in target.items():
        v = row.get(key)
        if v is None or not isinstance(v, (int, float)) or math.isnan(v):
            return False
        if (goal >= 0 and v < goal) or (goal < 0 and v > -goal):
            return False
    return True


def _train_input(task: str, input_size: str) -> tuple[int, int]:
    """(H, W) of one training input from a row's ``input_size`` (detectors: min x max side of a ~1:2.4 film)."""
    a, b = (int(v) for v in input_size.split("x"))
    return (b, max(32, round(b / 2.4))) if task == "detection" else (a, b)


def forward_gflops(name: str, task: str, hw: tuple[int, int], model_kwargs: dict) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from spinebench.models import create_model

    model = create_model(name, pretrained="none", **model_kwargs).eval()
    x = torch.rand(1, 1, *hw)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model([x[0]]) if task == "detection" else model(x)
    return counter.get_total_flops() / 1e9


def _with_source(name: str, profile: str) -> list[str]:
    """The models run_all trains for ``name``: its in-domain start first where the profile has one (the
    Inception-v2 detector starts from ``cls_inception_v3`` trained in the same run), as in ``run-all``; the row and
    the timings read are ``name``'s own (the source's training is in ``wall_seconds`` and the memory figures)."""
    from spinebench.engine.profiles import get_profile
    from spinebench.models.transfer import IN_DOMAIN

    plan = IN_DOMAIN.get(name) if name in get_profile(profile).transfer else None
    if plan is None or plan.classifier.startswith("body:"):  # body:<arch> is pre-trained inside the model's own run
        return [name]
    return [plan.classifier, name]


def _one(name: str, data: list[str], profile: str, device: str, work: str) -> dict:
    """Train and score one model with run_all in this (fresh) process; its row, history and run summary."""
    from spinebench.engine.runner import run_all
    from spinebench.engine.weights import read_weights_manifest

    logging.basicConfig(level=logging.WARNING)
    run_dir = run_all(data=data, profile=profile, models=_with_source(name, profile), device=device,
                      out=Path(work) / "runs",
                      results=Path(work) / "results", weights_dir=Path(work) / "weights", progress=False,
                      report=False)
    metrics = json.loads((run_dir / "metrics" / f"{name}-s0.json").read_text())
    summary = json.loads((run_dir / "run_summary.json").read_text())
    # the model as trained: the kwargs its weights record holds (detector sizes, Cobb input), not re-derived here
    entry = read_weights_manifest(Path(work) / "weights").get(name, {})
    return {"row": metrics["row"], "history": metrics.get("history", []), "summary": summary,
            "kwargs": entry.get("model_kwargs") or {}}


def bench(name: str, data: list[str], profile: str, device: str, work: str, peak: float) -> dict:
    task = model_info(name)["task"]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx) as ex:
        res = ex.submit(_one, name, data, profile, device, work).result()
    r, hist, summ = res["row"], res["history"], res["summary"]
    target = TARGETS.get(task, {})
    out = {"model": name, "task": task, "device": r.get("device"), "precision": r.get("precision"),
           "profile": profile, "data": " ".join(data), "status": r.get("status"), "git_commit": r.get("git_commit"),
           "target": " ".join(f"{k}{'<=' if v < 0 else '>='}{abs(v)}" for k, v in target.items()),
           "train_seconds": r.get("train_seconds"), "epochs": r.get("epochs"), "matmul_tflops": round(peak, 3),
           "peak_rss_mb": summ["peak_rss_mb"], "bytes_written_mb": round(summ["bytes_written"] / 1e6, 1),
           "wall_seconds": summ["wall_seconds"]}
    for key in ("any_sensitivity", "any_specificity", "implant_auroc", "scoliosis_auroc", "map_50", "smape"):
        out[key] = r.get(key, "")
    cum = 0.0
    for h in hist:
        cum += float(h.get("seconds", 0.0))
        if _reached(h, target):
            out.update(seconds_to_target=round(cum, 1), epoch_to_target=h["epoch"])
            break
    images = sum(int(h.get("images", 0)) for h in hist)
    train_s = float(r.get("train_seconds") or 0)
    if images and train_s > 0:
        ips = images / train_s
        gf = forward_gflops(name, task, _train_input(task, str(r["input_size"])), res["kwargs"])
        out.update(train_img_per_s=round(ips, 2), train_tflops=round(3 * gf * ips / 1e3, 4),
                   peak_fraction=round(3 * gf * ips / 1e3 / peak, 3))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=None, help="default: the models run-all trains in --profile")
    p.add_argument("--data", nargs="+", default=["synth"])
    p.add_argument("--profile", default="quick")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    p.add_argument("--tag", default="", help="added to the file name, for another machine of the same device type "
                                             "(time_to_accuracy_cpu-TAG.csv)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from spinebench.engine.device import precision_of, resolve_device
    from spinebench.engine.profiles import get_profile
    from spinebench.engine.runner import _choose_models

    dev = resolve_device(a.device)
    prec = precision_of(dev)
    dtype = torch.bfloat16 if prec == "bf16-mixed" else torch.float32
    peak = matmul_tflops(dtype=dtype) if dev.type == "cpu" else math.nan
    log.info("%s matmul: %.3f TFLOP/s on %d threads", prec, peak, torch.get_num_threads())
    models = a.models or _choose_models(None, get_profile(a.profile))  # what run-all trains by default
    out_path = Path(a.out) / f"time_to_accuracy_{dev.type}{'-' + a.tag if a.tag else ''}.csv"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="spinebench-tta-") as work:
        for name in models:
            try:
                row = bench(name, a.data, a.profile, a.device, work, peak)
            except Exception as e:  # noqa: BLE001 - one failing model becomes an error row
                row = {"model": name, "status": f"error: {type(e).__name__}: {e}"}
            rows.append(row)
            log.info("%s", {k: row.get(k) for k in ("model", "seconds_to_target", "train_seconds",
                                                     "train_img_per_s", "peak_fraction", "status")})
    with open(out_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    log.info("wrote %s", out_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
