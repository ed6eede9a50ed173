"""A quick detector's training step with torchvision's RoIAlign pooler against the matrix-product one.

Why: torchvision's CPU ``roi_align`` backward is a single-threaded loop; ``spinebench.models.roi_pool`` computes
the same numbers as matrix products (tests/test_roi_pool.py). This measures what that buys a training step of each
quick-profile detector on this machine: both poolers alternate on the same model, films and boxes (the detector
trains as `run-all` trains it: the quick profile's kwargs, the in-domain plan's frozen stages), so the machine's
drift falls on both alike. Prints a table; ``--out`` writes it as CSV.

    python benchmarks/bench_roi_pool.py --rounds 3 --steps 8 --out benchmarks/results/roi_pool_cpu.csv
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torchvision.ops import MultiScaleRoIAlign  # noqa: E402

from spinebench.engine.device import available_cores  # noqa: E402
from spinebench.engine.profiles import PROFILES  # noqa: E402
from spinebench.models import create_model  # noqa: E402
from spinebench.models.roi_pool import MatmulMultiScaleRoIAlign  # noqa: E402
from spinebench.models.transfer import IN_DOMAIN  # noqa: E402

DETECTORS = ("det_faster_rcnn_inception_v2", "det_faster_rcnn_inception_resnet_v2")


def quick_detector(name: str) -> torch.nn.Module:
    """The detector as the quick profile trains it: its kwargs, and its in-domain plan's frozen stages (weights
    random: the step's cost does not depend on them)."""
    from timm.layers import freeze_batch_norm_2d

    plan = IN_DOMAIN[name]
    model = create_model(name, pretrained="none", **PROFILES["quick"].detector_kwargs, **plan.model_kwargs)
    body = model.backbone.body
    if plan.freeze_body:
        model.backbone.body = freeze_batch_norm_2d(body).requires_grad_(False)
    elif plan.trainable_from:
        for n, child in body.named_children():
            if n == plan.trainable_from:
                break
            child.requires_grad_(False)
    return model.train()


def step_times(model, pooler, imgs, targets, steps: int) -> list[float]:
    model.roi_heads.box_roi_pool = pooler
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-4)
    out = []
    for i in range(steps + 1):
        t = time.perf_counter()
        loss = sum(model(imgs, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step of a pooler warms its allocations
            out.append(time.perf_counter() - t)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(DETECTORS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(available_cores())
    g = torch.Generator().manual_seed(0)
    # two films of the quick cache's size (320 px tall) with a construct box and a scoliosis box each
    imgs = [torch.rand(1, 320, 130, generator=g) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[40.0, 200.0, 90.0, 280.0], [30.0, 60.0, 100.0, 250.0]]),
                "labels": torch.tensor([1, 2])} for _ in range(2)]
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        model = quick_detector(name)
        names = model.roi_heads.box_roi_pool.featmap_names
        poolers = {"torchvision": MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2),
                   "matmul": MatmulMultiScaleRoIAlign(names, output_size=7, sampling_ratio=2)}
        times = {k: [] for k in poolers}
        for _ in range(args.rounds):
            for k, pooler in poolers.items():
                times[k] += step_times(model, pooler, imgs, targets, args.steps)
        base = statistics.median(times["torchvision"])
        for k, ts in times.items():
            med = statistics.median(ts)
            rows.append({"model": name, "pooler": k, "median_step_s": round(med, 4), "steps": len(ts),
                         "speedup": round(base / med, 3), "threads": torch.get_num_threads(),
                         "cpu": platform.processor() or platform.machine(),
                         "capability": torch.backends.cpu.get_cpu_capability()})
    cols = list(rows[0])
    print("  ".join(cols))
    for r in rows:
        print("  ".join(str(r[c]) for c in cols))
    if args.out:
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
