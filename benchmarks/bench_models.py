"""Cost of every registered model: parameters, inference latency (batch 1) and training throughput.

One row per model (timm's benchmark style): a model that fails becomes an ``error`` row instead of ending the
run. Inputs are random tensors at each model's default input size (``model_info(name)["input_size"]``):
classifiers ``B x 1 x H x W``; detectors a list of ``1 x H x W`` images with two boxes each (832 x 512, the
largest tall image the default transform passes through unresized); any other task (e.g. ``cobb``) a
``B x 1 x H x W`` tensor whose outputs' mean stands in for a loss. Random init: cost does not depend on weight
values. ``gflops`` is the forward pass at batch 1 (torch's FLOP counter, 2 FLOPs per multiply-add), which no
machine load can distort. Results go to ``benchmarks/results/models_<device>.csv`` (device and precision in the rows too).

    python benchmarks/bench_models.py                       # all models, CPU
    python benchmarks/bench_models.py --infer-iters 50 --budget-s 60 --models cls_resnet50

Numbers from a shared machine are only as good as its load: the 1-minute load average is written in each row.
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spinebench import LABEL_MAP  # noqa: E402
from spinebench.models import create_model, list_models, model_info  # noqa: E402

log = logging.getLogger("bench_models")

COLUMNS = ["model", "task", "device", "precision", "threads", "params_m", "input_size", "gflops", "infer_batch",
           "infer_p50_ms", "infer_p95_ms", "infer_iters", "infer_peak_mb", "train_batch", "train_img_per_s",
           "train_iters", "train_peak_mb", "loadavg_1m", "torch", "error"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory a block adds above what was in use when it started, in MB.

    CUDA: the caching allocator's peak (``torch.cuda.max_memory_allocated``). CPU: the process's resident set,
    sampled every 2 ms from /proc/self/statm by a background thread (Linux; NaN elsewhere), because torch's CPU
    allocations are invisible to tracemalloc and ``ru_maxrss`` only ever grows across models.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.mb = math.nan

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        elif os.path.exists("/proc/self/statm"):
            self._base = self._peak = self._rss()
            self._stop = threading.Event()

            def sample() -> None:
                while not self._stop.wait(0.002):
                    self._peak = max(self._peak, self._rss())
            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self.mb = (max(self._peak, self._rss()) - self._base) / 2**20


def _inputs(task: str, size: tuple[int, int], batch: int, device: torch.device):
    """(inputs, targets) for one step of ``task`` at ``size``."""
    h, w = size
    if task == "detection":
        images = [torch.rand(1, h, w, device=device) for _ in range(batch)]
        boxes = torch.tensor([[0.4 * w, 0.3 * h, 0.5 * w, 0.35 * h],   # a screw-sized box
                              [0.3 * w, 0.1 * h, 0.6 * w, 0.9 * h]],   # a tall curve box
                             device=device)
        labels = torch.tensor([LABEL_MAP["Lum"], LABEL_MAP["sco"]], device=device)
        return images, [dict(boxes=boxes, labels=labels) for _ in range(batch)]
    x = torch.rand(batch, 1, h, w, device=device)
    return x, torch.randint(0, 2, (batch, 2), device=device).float()  # two findings (classifiers)


def _loss(task: str, out, targets) -> torch.Tensor:
    if task == "detection":
        return sum(out.values())
    if task == "classification":
        logits, aux = out if isinstance(out, tuple) else (out, None)
        loss = F.binary_cross_entropy_with_logits(logits, targets[:, : logits.shape[1]])
        return loss + 0.4 * F.binary_cross_entropy_with_logits(aux, targets[:, : aux.shape[1]]) if aux is not None \
            else loss
    outs = out if isinstance(out, (tuple, list)) else [out]  # unknown task: any differentiable scalar will do
    return sum(o.float().mean() for o in outs if isinstance(o, torch.Tensor))


def _timed_loop(step, iters: int, warmup: int, budget_s: float, min_iters: int, device: torch.device) -> list[float]:
    """Seconds per ``step()`` after ``warmup`` untimed calls; stops early once ``budget_s`` is spent (but not
    before ``min_iters``), so heavy models cost seconds, not minutes, and light ones get more samples."""
    times: list[float] = []
    start = None
    for i in range(warmup + iters):
        _sync(device)
        t = time.perf_counter()
        step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t)
            start = start or t
            if len(times) >= min_iters and time.perf_counter() - start > budget_s:
                break
    return times


def bench_model(name: str, device: torch.device, infer_iters: int, train_iters: int, warmup: int,
                train_batch: int, det_train_batch: int, budget_s: float = 10.0) -> dict:
    info = model_info(name)
    task, size = info["task"], tuple(info["input_size"])
    row = {"model": name, "task": task, "params_m": info["params_m"], "input_size": f"{size[0]}x{size[1]}"}
    torch.manual_seed(0)
    model = create_model(name, pretrained="none").to(device)

    # inference, batch 1
    model.eval()
    x, _ = _inputs(task, size, 1, device)
    with torch.inference_mode(), PeakMemory(device) as infer_mem:
        times = [t * 1000 for t in _timed_loop(lambda: model(x), infer_iters, warmup, budget_s, 3, device)]
        # FLOPs do not depend on the machine's load, unlike the timings
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            model(x)
    row["gflops"] = round(counter.get_total_flops() / 1e9, 2)
    row.update(infer_batch=1, infer_iters=len(times), infer_p50_ms=round(float(np.percentile(times, 50)), 1),
               infer_p95_ms=round(float(np.percentile(times, 95)), 1), infer_peak_mb=round(infer_mem.mb, 1))

    # training: forward, backward, SGD step
    batch = det_train_batch if task == "detection" else train_batch
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    x, y = _inputs(task, size, batch, device)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        out = model(x, y) if task == "detection" else model(x)
        _loss(task, out, y).backward()
        opt.step()

    with PeakMemory(device) as train_mem:
        step_times = _timed_loop(train_step, train_iters, warmup, budget_s, 1, device)
    row.update(train_batch=batch, train_iters=len(step_times),
               train_img_per_s=round(batch / statistics.median(step_times), 2), train_peak_mb=round(train_mem.mb, 1))
    return row


def _bench_in_child(name: str, device: str, threads: int, *args) -> dict:
    """bench_model in a fresh process: each model starts from an empty allocator, so its peak memory is its own
    (in one process, memory freed by the previous model is reused and hides the next one's peak)."""
    torch.set_num_threads(threads)
    return bench_model(name, torch.device(device), *args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", help="model names (default: every registered model)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--infer-iters", type=int, default=10, help="at most this many timed inferences (default 10)")
    ap.add_argument("--train-iters", type=int, default=3, help="at most this many timed train steps (default 3)")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--budget-s", type=float, default=8.0,
                    help="stop timing a phase after this many seconds (>= 3 inferences, >= 1 step; default 8)")
    ap.add_argument("--train-batch", type=int, default=4, help="classifier/other training batch (default 4)")
    ap.add_argument("--det-train-batch", type=int, default=2, help="detector training batch (default 2)")
    ap.add_argument("--out", help="CSV path (default benchmarks/results/models_<device>.csv)")
    ap.add_argument("--no-isolate", dest="isolate", action="store_false",
                    help="benchmark every model in this process (faster start; CPU peak memory then undercounts)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.models or list_models()
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"models_{device.type}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")

    rows = []
    for name in names:
        base = {"device": device.type, "precision": "fp32", "threads": torch.get_num_threads(),
                "torch": torch.__version__}
        t0 = time.perf_counter()
        try:
            bench_args = (args.infer_iters, args.train_iters, args.warmup, args.train_batch, args.det_train_batch,
                          args.budget_s)
            if args.isolate:
                ctx = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(1, mp_context=ctx) as pool:
                    row = pool.submit(_bench_in_child, name, str(device), torch.get_num_threads(), *bench_args).result()
            else:
                row = bench_model(name, device, *bench_args)
        except Exception as e:  # one failing model is a row, not the end of the run
            log.exception("benchmark of %s failed", name)
            row = {"model": name, "error": f"{type(e).__name__}: {e}"}
        row = {**base, **row, "loadavg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else ""}
        rows.append(row)
        print(f"{name:<38} params {row.get('params_m', '')!s:>7} M  infer p50 {row.get('infer_p50_ms', '')!s:>8} ms "
              f"p95 {row.get('infer_p95_ms', '')!s:>8} ms  train {row.get('train_img_per_s', '')!s:>6} img/s "
              f"peak +{row.get('infer_peak_mb', '')!s} / +{row.get('train_peak_mb', '')!s} MB "
              f"({time.perf_counter() - t0:.0f} s){'  ERROR ' + row['error'] if row.get('error') else ''}")

    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in COLUMNS})
    print(f"wrote {out}")
    return 0 if not any(r.get("error") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
