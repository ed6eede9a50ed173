"""Does a dense, landmark-derived auxiliary target teach a classifier scoliosis in fewer steps? (issue #13)

Two arms on the quick profile's classifier recipe (``cls_resnet50`` by default: input 192 x 80, batch 16, AdamW lr
1e-3, weight decay 1e-4, warm-up 0.3 epoch of 12 steps then cosine to 0, gradient clip 10, bf16 autocast where the
engine uses it, the task's own weighted BCE, transform and fp32 validation), from random init, at FIXED STEP COUNTS
(wall time on a shared 2-core CPU is too noisy to compare):

- ``base``: the recipe as the engine runs it;
- ``aux``: the same images in the same order with the same augmentation draws, plus ``weight`` x the mean squared
  error of a small linear head on the pooled features (the classifier layer's input, caught by a forward hook)
  against the spine's shape from the 68 vertebra corners, moved through the same resize, mirror and affine as the
  pixels (``spinebench.data.transforms.spine_shape``, ``ClassifierTransform(shape_targets=True)``): ``centre``:
  the 17 vertebra centres' x relative to their mean, / input width; ``tilt``: the 17 vertebra direction angles
  (left-edge midpoint to right-edge midpoint, the AASCE Cobb algorithm's vectors), radians; or ``both`` (what the
  library's ``TrainSettings.aux_shape_weight`` trains). Each part is divided by its training-split standard
  deviation, so weight 1 means a unit-variance regression. The head is train-time only: the model scored is the
  registered one, 2 outputs.
- ``saux``: the library's spatial head (``SpineShapeHead(spatial=True)``, ``TrainSettings.aux_shape_head``): the
  whole shape from the map BEFORE pooling (Grad-CAM's layer), through the Cobb regressor's head (1x1 reduce to 32
  + BN + ReLU, flattened, MLP 256, last layer zero): where the spine is, which pooling discards.

Results (``results/aux_target_cuda.csv``: H200, bf16, 3-5 seeds; ``results/aux_target_cpu.csv``: 2-core CPU,
seed 0), ResNet-50, mean validation scoliosis AUROC at the end of a schedule of N steps: 120 steps base 0.854,
both:1 0.806; 240 steps 0.885 / 0.916; 360 steps 0.884 (0.863-0.904) / 0.960 (0.935-0.976), centre:1 0.960,
tilt:1 0.928, both:0.3 0.889; weights 3 and 10 cost implant AUROC (0.96 and 0.69 at 360 steps). The shape loss
raises the plateau from ~240 steps on; it does not help before its head learns (its loss is still ~1.1, the
mean's, after 120 steps), so it does nothing for the quick profile's ~40 ResNet-50 steps.
SqueezeNet (2-core CPU, 2 seeds, 240 steps): scoliosis 0.63 / 0.62 base, 0.54 / 0.36 with both:1 (its head never
learns: loss ~1.07); not for SqueezeNet.
At the quick profile's 128 x 56 (2-core CPU, seeds 0 / 1, 2026-12-05): DenseNet-121, 200 steps, scoliosis
0.867 / 0.874 base, 0.995 / 0.987 both:1; Inception-v3, 140 steps, 0.853 / 0.840 against 0.910 / 0.920; ResNet-50,
160 steps, 0.815 / 0.901 (base) against 0.846 / 0.871, 250 steps 0.887 / 0.877 against 0.915 / 0.954. ``saux`` on
ResNet-50 at 160 steps: 0.848 / 0.855 (both:1), 0.834 / 0.893 (both:0.3); its head still predicts the mean (aux
loss ~1.07): not better than pooling. (A plain linear layer on the flattened 16k-wide map, tried first, diverged:
aux loss 1.1-1.7, implant AUROC down to 0.80.) SqueezeNet at 128 x 56, 720 steps (60 epochs, its budget's
worth): 0.588 / 0.611 base, 0.753 / 0.607 both:1, 0.568 / 0.572 both:0.3, but **0.998 / 0.990 saux:both:1**
(implant 0.978 / 0.990; its aux loss falls to 0.12): the quick profile's SqueezeNet recipe since a1cf1c2.

Each run anneals to 0 at its own step count (``--steps``: separate runs, as the quick profile's budget anneals at
its end); ``--evals`` adds validation points inside the longest run's schedule (not annealed there). Validation
split only (``assign_splits`` seed 0, as run-all), never test. One CSV row per (arm, seed, steps, eval point):
``benchmarks/results/aux_target_<device>.csv``.

    python benchmarks/bench_aux_target.py --arms base aux:both:1 --seeds 0 --steps 360 --evals 120 240
    python benchmarks/bench_aux_target.py --info     # the label's threshold, ambiguous validation films
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spinebench import SCOLIOSIS_COBB_DEG  # noqa: E402
from spinebench.data.transforms import ClassifierTransform  # noqa: E402
from spinebench.tasks.classification import SpineShapeHead, spine_shape_scale  # noqa: E402

log = logging.getLogger("bench_aux_target")

COLUMNS = ["model", "arm", "target", "weight", "seed", "steps", "schedule_steps", "val_auroc_implant",
           "val_auroc_scoliosis", "val_loss", "train_loss", "train_aux_loss", "s_per_step", "threads", "device",
           "precision", "input_size", "batch_size", "lr", "git_commit"]


def run_arm(model_name: str, arm: str, seed: int, steps: int, evals: list[int], sets: dict, device,
            scale: torch.Tensor, threads: int, lr: float | None = None) -> list[dict]:
    from spinebench.engine.device import channels_last, guard_bf16_convs, precision_of, seed_everything
    from spinebench.engine.profiles import get_profile
    from spinebench.engine.train import _schedule, optimizer_step, predict
    from spinebench.models import create_model
    from spinebench.tasks import get_task
    from spinebench.tasks.base import LoaderData, auroc, bce_from_probs
    from spinebench.tasks.classification import pos_weight

    kind, target, weight = (arm.split(":") + ["", "0"])[:3] if arm != "base" else ("base", "", "0")
    weight = float(weight)
    parts = {"centre": slice(0, 17), "tilt": slice(17, 34), "both": slice(0, 34), "": slice(0, 0)}[target]
    prof = get_profile("quick")
    s = prof.settings_for(model_name, len(sets["train"]))
    if lr:
        s = replace(s, lr=lr)
    task = get_task(model_name)
    seed_everything(seed)
    model = create_model(model_name, pretrained="none")
    guard_bf16_convs(model.to(device))
    if channels_last(device, task.fixed_shapes):
        model.to(memory_format=torch.channels_last)
    # the pooled features: the classifier layer's input (ResNet fc, DenseNet classifier, Inception fc; SqueezeNet's
    # final conv takes a feature map, averaged here)
    feats = {}
    fc = model.get_submodule(model.default_cfg["classifier"][0])
    hook = fc.register_forward_hook(lambda m, inp, out: feats.__setitem__("x", inp[0]))
    head = None
    params = [p for p in model.parameters() if p.requires_grad]
    if kind == "aux":
        g = torch.Generator().manual_seed(seed + 12345)  # the model's init draws stay those of the base arm
        width = fc.in_features if isinstance(fc, torch.nn.Linear) else fc.in_channels
        head = torch.nn.Linear(width, parts.stop - parts.start).to(device)
        with torch.no_grad():
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) / math.sqrt(width) * 0.1)
            head.bias.zero_()
    elif kind == "saux":  # the library's spatial head (the map before pooling; all 34 targets)
        if target != "both":
            raise SystemExit("saux trains the whole shape: use saux:both:<weight>")
        head = SpineShapeHead(model, scale, seed + 12345, spatial=True, input_size=tuple(s.image_size)).to(device)
    if head is not None:
        params += list(head.parameters())
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay, fused=device.type in ("cpu", "cuda"))
    spe = s.max_steps_per_epoch
    sched = _schedule(opt, steps, int(s.warmup_epochs * spe))
    train = sets["train"].with_transform(ClassifierTransform(s.image_size, train=True, shape_targets=True))
    val = sets["val"].with_transform(task.transform(model, s.image_size, train=False))

    data = LoaderData(train, s.batch_size, seed, 0, device, 0, 1)
    data.pos_weight = pos_weight(sets["train"]).to(device)  # what ClassificationTask.loss reads

    sc = scale[parts].to(device)
    rows, step, t_train, loss_sum, aux_sum, n = [], 0, 0.0, 0.0, 0.0, 0
    points = sorted(set([e for e in evals if e < steps] + [steps]))
    epoch = 0
    while step < steps:
        model.train()
        t0 = time.perf_counter()  # a step's time includes loading and augmenting its batch, as in the engine
        for k, batch in enumerate(data.batches(epoch)):
            if k >= spe or step >= steps:
                break
            loss, _ = task.loss(model, batch, data, device, s)
            aux_loss = torch.zeros((), device=device)
            if head is not None:
                if kind == "saux":
                    aux_loss = head.loss(torch.stack(batch["shape"]))
                else:
                    x = feats["x"].float()
                    pred = head(x.mean((2, 3)) if x.dim() == 4 else x)
                    aux_loss = F.mse_loss(pred, torch.stack(batch["shape"]).to(device)[:, parts] / sc)
                loss = loss + weight * aux_loss
            optimizer_step(model, loss, params, opt, sched, epoch, k)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t_train += time.perf_counter() - t0
            loss_sum, aux_sum, n = loss_sum + float(loss.detach()), aux_sum + float(aux_loss.detach()), n + 1
            step += 1
            if step in points:
                pred = predict(model, val, device, batch_size=s.batch_size)
                yv, pv = pred["labels"], pred["probs"]
                row = {"model": model_name, "arm": kind, "target": target, "weight": weight, "seed": seed,
                       "steps": step, "schedule_steps": steps, "val_auroc_implant": round(auroc(yv[:, 0], pv[:, 0]), 4),
                       "val_auroc_scoliosis": round(auroc(yv[:, 1], pv[:, 1]), 4),
                       "val_loss": round(bce_from_probs(yv, pv), 4), "train_loss": round(loss_sum / n, 4),
                       "train_aux_loss": round(aux_sum / n, 4), "s_per_step": round(t_train / step, 4),
                       "threads": threads, "device": device.type, "precision": precision_of(device),
                       "input_size": "x".join(map(str, s.image_size)), "batch_size": s.batch_size, "lr": s.lr}
                log.info("%s", row)
                rows.append(row)
                loss_sum, aux_sum, n = 0.0, 0.0, 0
                model.train()
            t0 = time.perf_counter()
        epoch += 1
    hook.remove()
    if kind == "saux":
        head.close()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="cls_resnet50")
    p.add_argument("--arms", nargs="+", default=["base", "aux:both:1"],
                   help="base, or aux:<centre|tilt|both>:<weight>")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--steps", nargs="+", type=int, default=[360], help="schedule lengths (separate runs)")
    p.add_argument("--evals", nargs="*", type=int, default=[120, 240], help="extra eval points in the longest run")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--lr", type=float, nargs="+", default=[None], help="learning rates (default: the profile's)")
    p.add_argument("--out", default=None)
    p.add_argument("--info", action="store_true", help="label threshold, ambiguous validation films, check; exit")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from spinebench.data.dataset import SpineDataset
    from spinebench.data.sources import load_records
    from spinebench.data.splits import assign_splits
    from spinebench.engine.device import resolve_device
    from spinebench.engine.profiles import get_profile
    from spinebench.engine.runner import _git_commit

    dev = resolve_device(a.device)
    if a.threads:  # after resolve_device, which gives a CPU run every core
        torch.set_num_threads(a.threads)
    prof = get_profile("quick")
    records = load_records(["synth"], max_side=prof.cache_side)
    assign_splits(records, seed=0)
    full = SpineDataset(records, max_side=prof.cache_side, workers=2)
    sets = {sp: full.subset([i for i, r in enumerate(records) if r["split"] == sp]) for sp in ("train", "val")}
    size = prof.settings_for(a.model, len(sets["train"])).image_size
    if a.info:
        cobb = np.array([max(r["cobb_pt"], r["cobb_mt"], r["cobb_tl"]) for r in sets["val"].records])
        sco = np.array([r["scoliosis"] for r in sets["val"].records])
        imp = np.array([r["implant"] for r in sets["val"].records])
        print(f"scoliosis label: largest Cobb >= {SCOLIOSIS_COBB_DEG} deg; val films {len(cobb)}, scoliosis "
              f"{sco.sum()}, implant {imp.sum()}; label == (max Cobb >= thr): {bool(((cobb >= SCOLIOSIS_COBB_DEG) == sco).all())}")
        for lo, hi in ((5, 15), (7, 13), (8, 12)):
            m = (cobb >= lo) & (cobb < hi)
            print(f"val films with max Cobb in [{lo}, {hi}): {m.sum()} ({sco[m].sum()} labelled scoliosis)")
        print("val max Cobb quantiles (0, 10, 25, 50, 75, 90, 100%):",
              np.round(np.quantile(cobb, [0, .1, .25, .5, .75, .9, 1]), 1))
        print("target std (centre, tilt):", spine_shape_scale(sets["train"], size)[[0, 17]].tolist())
        return 0
    scale = spine_shape_scale(sets["train"], size)
    out = Path(a.out) if a.out else Path(__file__).resolve().parent / "results" / f"aux_target_{dev.type}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.exists()
    commit = _git_commit()
    with open(out, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            w.writeheader()
        for steps in sorted(a.steps, reverse=True):
            for seed in a.seeds:
                for arm, lr in ((arm, lr) for arm in a.arms for lr in a.lr):
                    ev = a.evals if steps == max(a.steps) else []
                    try:
                        rows = run_arm(a.model, arm, seed, steps, ev, sets, dev, scale, torch.get_num_threads(), lr)
                    except Exception as e:  # noqa: BLE001 - one failing arm becomes an error row
                        log.exception("%s failed", arm)
                        rows = [{"model": a.model, "arm": arm, "seed": seed, "steps": steps,
                                 "val_loss": f"error: {type(e).__name__}: {e}"}]
                    for r in rows:
                        r["git_commit"] = commit
                        w.writerow(r)
                    f.flush()
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
