"""How far the quick classifiers' implant AUROC is from what their input allows, and what holds them there.

A small purpose-built CNN (five 3 x 3 conv blocks, ~33 k parameters: :class:`MetalNet`) is trained from random
init for the implant finding alone, on the same training split (``assign_splits`` seed 0, as ``run-all``), the
same 320 px decoded cache, the same input (128 x 56 by each cell's brightest pixel, the quick profile's
ResNet-50 / DenseNet-121 / SqueezeNet input) and the same augmentation (``ClassifierTransform``) as the quick
classifiers; its implant logit is its per-cell map pooled by log-sum-exp, and the map also learns where the
implant boxes are (like the classifiers' ``aux_implant_weight`` loss). It is then scored on films it never saw (every
film of each ``--eval`` spec, the film and its mirror image, as the classifiers are): implant AUROC on all of
them, and on the small hardware alone (implant films whose tallest ``Lum`` box is under a tenth of the film's
height: standalone cages and single screws, where the classifiers lose; each against all films without one).

Two budgets per seed: ``--seconds`` of training at ``--batch`` (what a minute of two cores buys a network this
cheap: ~900 steps of 32 films), and ``--images``, the number of training films a quick classifier sees in its
budget (ResNet-50: 16-22 epochs x 12 steps x 16 films = 3,100-4,200; SqueezeNet ~11,500). Why: it separates the two
things that could hold the classifiers' implant figure (#13's 0.97) back: the input (if this network, given the
images, also stops short, the pixels are the limit) and the number of films a 2-core CPU lets a large
classifier see in its share of ten minutes.

Measured (2-core Zen 4 EPYC, bf16, ``--eval`` the 600 films of generator seed 7 and the 626 real hybrid films;
docs/results.md, session 49), seeds 1 / 2: 60 s (~900 steps of 32, ~29,000 films): unseen implant AUROC 0.965 /
0.962, small hardware 0.862 / 0.848, real hybrid 0.949 / 0.941; the 3,200 films of 200 steps of 16 (what a quick
DenseNet-121 or Inception-v3 sees): 0.923 / 0.941, small hardware 0.748 / 0.788, real 0.882 / 0.875 -- the quick
classifiers' own range (unseen 0.93-0.95, smallest quarter 0.74-0.78, on the seed-1 baseline of that session).
Seed 1 only: 120 s (56,500 films) 0.964, small 0.859, real 0.953; twice as wide (12,600 films in 60 s) 0.965 /
0.860 / 0.937; a 256 x 112 input (8,900 films in 60 s) 0.952 / 0.823 / 0.869, from a 640 px cache (25,700 films
in 180 s) 0.969 / 0.876 / 0.953. Nine times the films buy +0.03 and the small hardware +0.08, then it levels off
at ~0.965-0.97 on the unseen films whatever the time, width or input size: a quick classifier sees a ninth of the
films it would need to get near 0.97, and the faintest small hardware stays short (~0.86-0.88) even then.

It has its own short training loop rather than the engine's: it is not a registered model (it reads no curve and
would make every classifier's implant comparison its own), and a clock or image budget needs none of the
engine's checkpoints, validation or thresholds.

    python benchmarks/bench_implant_ceiling.py --eval synth=/tmp/synth7 hybrid:aasce=/path/to/aasce2019
    python benchmarks/bench_implant_ceiling.py --seeds 1 2 --seconds 60 --images 3200 --eval synth=/tmp/synth7

Results: ``benchmarks/results/implant_ceiling_cpu.csv`` (appended): one row per (seed, budget, eval spec).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

COLUMNS = ["seed", "budget", "steps", "images", "train_s", "input", "width", "batch", "data", "n_images",
           "n_implant", "n_small", "auroc", "auroc_small", "auroc_large", "precision", "git_commit"]
#: an implant film whose tallest ``Lum`` box is under this fraction of the film's height is "small hardware"
SMALL = 0.1


class MetalNet(nn.Sequential):
    """Five 3 x 3 conv + BN + ReLU blocks (two of stride 2), then a 1 x 1 conv to one implant logit per cell."""

    def __init__(self, width: int = 16):
        def block(i, o, s):
            return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        w = width
        super().__init__(block(1, w, 1), block(w, 2 * w, 2), block(2 * w, 2 * w, 1), block(2 * w, 2 * w, 2),
                         block(2 * w, 2 * w, 1), nn.Conv2d(2 * w, 1, 1))
        nn.init.constant_(self[-1].bias, -4.0)  # start near "no hardware in this cell"


def train(net: MetalNet, ds, seed: int, batch: int, seconds: float, max_steps: int, lr: float, device) -> tuple:
    """AdamW, 10 warm-up steps, cosine to 0 over whichever ends first (the clock or ``max_steps``); weighted BCE on
    the pooled logit plus the map's BCE against the implant boxes. Returns (steps, seconds)."""
    from spinebench.data.dataset import collate_dicts
    from spinebench.engine.device import autocast

    y = np.array([r["implant"] for r in ds.records], dtype=np.float64)
    pos_weight = torch.tensor((1 - y.mean()) / max(y.mean(), 1e-6), dtype=torch.float32)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    net.train()
    t0, step = time.perf_counter(), 0
    while step < max_steps and time.perf_counter() - t0 < seconds:
        ds.epoch = step  # the augmentation draws are seeded by (seed, epoch, film): new ones every step
        b = collate_dicts([ds[int(i)] for i in rng.choice(len(ds), batch, replace=False)])
        x = b["image"].to(device, memory_format=torch.channels_last)
        frac = min(1.0, max((time.perf_counter() - t0) / seconds, step / max_steps))
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 10) * 0.5 * (1 + math.cos(math.pi * frac))
        with autocast(device):
            cells = net(x)
        cells = cells.float()
        loss = F.binary_cross_entropy_with_logits(_lse(cells), b["labels"][:, 0].float(), pos_weight=pos_weight)
        mask = torch.stack(b["implant_map"])[:, None]
        known = torch.isfinite(mask.flatten(1)).all(1)
        if known.any():
            target = F.adaptive_max_pool2d(mask[known], cells.shape[-2:])
            loss = loss + F.binary_cross_entropy_with_logits(cells[known], target, pos_weight=torch.tensor(5.0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
    return step, time.perf_counter() - t0


def _lse(cells: torch.Tensor) -> torch.Tensor:
    """(B, 1, h, w) cell logits -> (B,) implant logits, pooled as the classifiers' ``implant_pool="lse"``."""
    from spinebench.models.classifiers import pool_class_maps

    return pool_class_maps(cells.flatten(2), "lse")[:, 0]


@torch.no_grad()
def scores(net: MetalNet, ds, batch: int = 64) -> np.ndarray:
    """Implant logits of every film of ``ds``: the mean of the film's and its mirror image's, by the classifiers'
    own :func:`spinebench.tasks.classification.mean_of_looks`."""
    from spinebench.data.dataset import collate_dicts
    from spinebench.tasks.classification import mean_of_looks

    net.eval()
    out = []
    for i in range(0, len(ds), batch):
        x = collate_dicts([ds[j] for j in range(i, min(len(ds), i + batch))])["image"]
        out.append(mean_of_looks(_lse(net(x)), lambda v: _lse(net(v)), x).numpy())
    return np.concatenate(out)


def main(argv=None) -> int:
    from bench_implant_size import implant_height

    from spinebench.data.sources import load_records
    from spinebench.data.splits import assign_splits
    from spinebench.data.transforms import ClassifierTransform
    from spinebench.engine.device import precision_of, seed_everything
    from spinebench.engine.runner import decoded_dataset
    from spinebench.errors import SpinebenchError
    from spinebench.evaluation.results import append_csv_row, git_commit
    from spinebench.tasks.base import auroc

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=["synth"], help="training data spec(s) (its train split is used)")
    ap.add_argument("--eval", nargs="+", required=True, help="data spec(s) whose films are all scored")
    ap.add_argument("--seeds", nargs="+", type=int, default=[1])
    ap.add_argument("--seconds", type=float, default=60.0, help="the clock budget's training seconds")
    ap.add_argument("--images", type=int, default=3200,
                    help="the image budget: films seen in steps of 16, the quick classifiers' batch "
                         "(0 = leave that arm out)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--input", default="128x56", help="H x W of the network's input")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--cache-side", type=int, default=320, help="the decoded cache's longest side (quick: 320)")
    ap.add_argument("--out", default=None, help="CSV (default benchmarks/results/implant_ceiling_cpu.csv)")
    args = ap.parse_args(argv)
    try:
        size = tuple(int(v) for v in args.input.lower().split("x"))
        assert len(size) == 2 and min(size) >= 8
    except (ValueError, AssertionError):
        ap.error(f"--input must be H x W, e.g. 128x56 (got {args.input!r})")
    device = torch.device("cpu")
    try:  # a wrong path or spec is one line, not a traceback
        records = [r for r in assign_splits(load_records(args.data, max_side=args.cache_side), seed=0)
                   if r["split"] == "train"]
        train_ds = decoded_dataset(records, args.cache_side)
        evals = {}
        for spec in args.eval:
            recs = load_records(spec, max_side=args.cache_side)
            evals[spec] = (decoded_dataset(recs, args.cache_side).with_transform(
                ClassifierTransform(size, train=False, downsample="max")), recs)
    except (SpinebenchError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out or Path(__file__).resolve().parent / "results" / "implant_ceiling_cpu.csv")
    arms = [("seconds", args.batch, args.seconds, 10**9)]
    if args.images:
        arms.append(("images", 16, math.inf, max(1, args.images // 16)))
    for seed in args.seeds:
        for budget, batch, seconds, max_steps in arms:
            seed_everything(seed)
            net = MetalNet(args.width).to(memory_format=torch.channels_last)
            ds = train_ds.with_transform(ClassifierTransform(size, train=True, implant_map=True, downsample="max"))
            ds.seed = seed
            steps, took = train(net, ds, seed, batch, seconds, max_steps, args.lr, device)
            for spec, (ev, recs) in evals.items():
                y = np.array([int(r["implant"]) for r in recs])
                p = scores(net, ev)
                small = np.array([0 < implant_height(r) < SMALL for r in recs]) & (y == 1)
                neg, large = y == 0, (y == 1) & ~small
                row = {"seed": seed, "budget": budget, "steps": steps, "images": steps * batch,
                       "train_s": round(took, 1), "input": f"{size[0]}x{size[1]}", "width": args.width,
                       "batch": batch, "data": spec, "n_images": len(y), "n_implant": int(y.sum()),
                       "n_small": int(small.sum()), "auroc": round(auroc(y, p), 4),
                       "auroc_small": round(auroc(y[neg | small], p[neg | small]), 4) if small.any() else "",
                       "auroc_large": round(auroc(y[neg | large], p[neg | large]), 4),
                       "precision": precision_of(device), "git_commit": git_commit()}
                append_csv_row(out, row, COLUMNS)
                print({k: row[k] for k in COLUMNS if k not in ("git_commit",)}, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
