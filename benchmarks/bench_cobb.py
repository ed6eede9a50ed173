"""CPU latency of the Cobb-angle landmark model: one radiograph at a time, as a clinic workstation would run it.

    python benchmarks/bench_cobb.py --threads 2 --images 10 [--weights weights] [--out results/bench_cobb.csv]

Two numbers per model, medians over the images (after warm-up):
  forward_ms   the network alone on a preprocessed (1, 1, H, W) input (weights do not change it, so random
               init is used when no trained weights are found);
  measure_ms   the whole ``spinebench.measure`` path: load the file, preprocess, network, decode, Cobb angles
               (only with trained weights and real images).
The 1-minute load average and the process CPU time per forward (``forward_cpu_ms``) are recorded beside them:
on a shared machine the load, not the model, often decides the wall time; CPU time / threads is what a dedicated
machine with that many cores would take (at perfect parallel efficiency).
One CSV row per model (timm's benchmark habit), appended to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

log = logging.getLogger("bench_cobb")


def _images(n: int) -> list[str]:
    from spinebench.data.aasce import IMAGE_SUFFIXES, find_root
    from spinebench.paths import default_aasce_path

    try:
        root = find_root(default_aasce_path())
    except Exception:
        return []
    files = sorted(p for p in (root / "data" / "training").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return [str(p) for p in files[:n]]


def bench(model_name: str, threads: int, n: int, weights_dir: str | None) -> dict:
    from spinebench.measure import cobb_models, measure
    from spinebench.models import create_model, model_info

    torch.set_num_threads(threads)
    trained = bool(weights_dir) and Path(weights_dir).is_dir() and model_name in cobb_models(weights_dir)
    model = create_model(model_name, pretrained="none").eval()
    h, w = model.default_cfg["input_size"]
    x = torch.rand(1, 1, h, w)
    times, cpu = [], []
    with torch.inference_mode():
        for k in range(n + 2):
            t0, c0 = time.perf_counter(), time.process_time()
            model(x)
            if k >= 2:
                times.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
    row = {"model": model_name, "device": "cpu", "threads": threads, "input_size": f"{h}x{w}",
           "params_m": model_info(model_name)["params_m"], "forward_ms": round(statistics.median(times), 1),
           "forward_ms_max": round(max(times), 1),
           # CPU seconds the process used per forward: on a loaded shared machine wall time is inflated by other
           # processes, CPU time much less so; CPU time / threads bounds the wall time of a dedicated machine
           "forward_cpu_ms": round(statistics.median(cpu), 1), "measure_cpu_ms": "", "measure_ms": "", "images": "",
           "load_avg_1m": round(os.getloadavg()[0], 2), "trained_weights": trained}
    files = _images(n)
    if trained and files:
        measure(files[:1], weights_dir=weights_dir)  # warm-up, loads the model once
        c0 = time.process_time()
        ms = [r["ms"] for r in measure(files, weights_dir=weights_dir)]
        row.update(measure_ms=round(float(np.median(ms)), 1), images=len(ms),
                   measure_cpu_ms=round((time.process_time() - c0) * 1000 / len(ms), 1))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", help="default: every registered cobb model")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=int, default=10)
    p.add_argument("--weights", default="weights")
    p.add_argument("--out", help="append the rows to this CSV")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from spinebench.models import list_models

    rows = []
    for name in args.models or list_models(task="cobb"):
        try:
            rows.append(bench(name, args.threads, args.images, args.weights))
        except Exception as e:  # one failing model is an error row, the others go on
            rows.append({"model": name, "error": f"{type(e).__name__}: {e}"})
    fields = list(dict.fromkeys(k for r in rows for k in r))
    w = csv.DictWriter(sys.stdout, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        new = not out.exists()
        with open(out, "a", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=fields)
            if new:
                wr.writeheader()
            wr.writerows(rows)


if __name__ == "__main__":
    main()
