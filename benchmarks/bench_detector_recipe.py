"""Detector recipes on the default synthetic data, scored on VALIDATION only (never tune on test).

Each recipe trains one detector with ``spinebench.engine.train.train_model`` (the loop run-all uses) and scores
the validation split with run-all's own detection metrics (``detection_metrics``: ``Lum`` / ``sco`` AP@0.5) and
the image-level implant AUROC from ``predict``'s probabilities. Recipes that start from a classifier
(``init``) first train it on the training split with the quick classifier settings (``PROFILES["quick"]``),
once per process, then transfer it with :func:`spinebench.models.transfer.init_backbone_from_classifier`.

One row per recipe in ``benchmarks/results/detector_recipe_<device>.csv``: steps, images, training seconds
(training only: validation is scored outside the loop and timed apart), the metrics, and the machine's load
(``load_1min``; the CPU may be shared, so compare recipes per step and per image, not per second).

    python benchmarks/bench_detector_recipe.py --list
    python benchmarks/bench_detector_recipe.py --recipes v2_quick v2_in_domain
    python benchmarks/bench_detector_recipe.py --recipes v2_transfer_lean_6a --set lr=3e-4 steps=120

``--holdout SPEC`` also scores every recipe on all images of another data source (``holdout_*`` columns): a
synthetic set of another seed (``python -m spinebench data synth --seed 7 --scale 0.5 --out DIR``, then
``--holdout synth=DIR``) holds 600 unseen films and 172 implants against validation's 98 and 34, so recipes
differ by more than the noise of a few dozen boxes. It is not the test split, and training never sees it.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spinebench.data.dataset import SpineDataset  # noqa: E402
from spinebench.data.sources import load_records  # noqa: E402
from spinebench.data.splits import assign_splits  # noqa: E402
from spinebench.engine.profiles import PROFILES  # noqa: E402
from spinebench.engine.train import TrainSettings, predict, train_model, transforms_for  # noqa: E402
from spinebench.evaluation.results import append_csv_row  # noqa: E402
from spinebench.models import create_model  # noqa: E402
from spinebench.models.classifiers import fit_min_input  # noqa: E402
from spinebench.tasks.base import auroc  # noqa: E402
from spinebench.tasks.detection import DetectionTask, detection_metrics  # noqa: E402
from spinebench.models.transfer import (IN_DOMAIN, INCEPTION_V3_STEM_TO_IRV2, body_classifier,  # noqa: E402
                                        init_backbone_from_classifier, start_body_classifier)

log = logging.getLogger("bench_detector_recipe")

COLUMNS = ["recipe", "model", "init", "seed", "det_seed", "steps", "images", "train_seconds", "s_per_step", "val_seconds",
           "val_ap50_Lum", "val_ap50_sco", "val_map_50", "val_auroc_implant", "val_auroc_scoliosis", "pretrain_seconds",
           "load_1min", "settings", "model_kwargs", "status", "holdout", "holdout_ap50_Lum", "holdout_ap50_sco",
           "holdout_auroc_implant"]

QUICK = PROFILES["quick"]
V2, IRV2 = "det_faster_rcnn_inception_v2", "det_faster_rcnn_inception_resnet_v2"
#: the quick profile's detector schedule before this benchmark (3 x 10 steps at 2e-4), and its model kwargs
OLD_QUICK = TrainSettings(epochs=3, batch_size=2, lr=2e-4, patience=3, warmup_epochs=0.2, max_steps_per_epoch=10,
                          val_every=0, checkpoint_every_s=60)
OLD_KW = {"min_size": 256, "max_size": 320}
#: smaller sampling and proposal counts: the RoI head (256 x 7 x 7 -> 1024) is costlier than the body at 320 px
LEAN = dict(rpn_batch_size_per_image=64, box_batch_size_per_image=64, rpn_pre_nms_top_n_train=600,
            rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100)
#: 4 x 12 steps at 1e-3 (exploration schedule; ``--set steps=120`` for the profile's length)
SHORT = replace(OLD_QUICK, epochs=4, max_steps_per_epoch=12, lr=1e-3, warmup_epochs=0.5)


@dataclass
class Recipe:
    model: str
    settings: TrainSettings
    model_kwargs: dict = field(default_factory=dict)
    init: str = "none"            # "none" | "cls_inception_v3" | "body" (timm body pre-trained as a classifier)
    freeze_bn: bool = True
    trainable_from: str | None = None
    freeze_body: bool = False
    rename: dict | None = None    # classifier -> body module names (a partial transfer, e.g. the stem only)
    pretrain_epochs: int | None = None  # "body" pre-training: epochs of the quick classifier settings (None: its own)
    pretrain: dict = field(default_factory=dict)  # the pre-training's TrainSettings fields on top of run-all's
    start: bool = False           # "body" only: start the pre-training from the plan's start_from (IN_DOMAIN)


def _planned(model: str) -> Recipe:
    """The quick profile as run-all trains the detector, started as models.transfer.IN_DOMAIN plans it."""
    plan = IN_DOMAIN[model]
    return Recipe(model, QUICK.detector, dict(QUICK.detector_kwargs, **plan.model_kwargs),
                  init="body" if plan.classifier.startswith("body:") else plan.classifier,
                  trainable_from=plan.trainable_from, freeze_body=plan.freeze_body,
                  rename=dict(plan.rename) if plan.rename else None, pretrain_epochs=plan.pretrain_epochs,
                  start=bool(plan.start_from))


RECIPES: dict[str, Recipe] = {
    # the quick profile before this benchmark, random init
    "v2_quick_old": Recipe(V2, OLD_QUICK, OLD_KW),
    "irv2_quick_old": Recipe(IRV2, OLD_QUICK, OLD_KW),
    # the quick profile now: random init (what run-all does until it calls init_in_domain), then as planned
    "v2_quick": Recipe(V2, QUICK.detector, dict(QUICK.detector_kwargs)),
    "irv2_quick": Recipe(IRV2, QUICK.detector, dict(QUICK.detector_kwargs)),
    "v2_in_domain": _planned(V2),
    "irv2_in_domain": _planned(IRV2),
    # exploration (see --set to vary them)
    "v2_transfer_old": Recipe(V2, OLD_QUICK, OLD_KW, init="cls_inception_v3"),
    "v2_lean_lr1e3": Recipe(V2, SHORT, dict(OLD_KW, **LEAN)),
    "v2_transfer_lean": Recipe(V2, SHORT, dict(OLD_KW, **LEAN), init="cls_inception_v3"),
    "v2_transfer_lean_6a": Recipe(V2, SHORT, dict(OLD_KW, **LEAN), init="cls_inception_v3", trainable_from="Mixed_6a"),
    "irv2_lean": Recipe(IRV2, SHORT, dict(OLD_KW, **LEAN)),
    # the stem only (Inception-v3's stem is Inception-ResNet-v2's), frozen; the rest from random init
    "irv2_stem_lean": Recipe(IRV2, SHORT, dict(OLD_KW, **LEAN), init="cls_inception_v3",
                             rename=INCEPTION_V3_STEM_TO_IRV2, trainable_from="mixed_5b"),
    # its own body pre-trained as a classifier on the training split, then transferred
    "irv2_body_lean": Recipe(IRV2, SHORT, dict(OLD_KW, **LEAN), init="body", trainable_from="mixed_6a"),
}


def _override(recipe: Recipe, items: list[str]) -> Recipe:
    """A copy of ``recipe`` with ``KEY=VALUE`` overrides (values parsed as Python literals where they are)."""
    import ast

    settings, kwargs, fields = recipe.settings, dict(recipe.model_kwargs), {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        if key == "steps":
            settings = replace(settings, epochs=max(1, math.ceil(value / settings.max_steps_per_epoch)))
        elif key.startswith("kw."):
            kwargs[key[3:]] = value
        elif key.startswith("pretrain."):
            fields.setdefault("pretrain", dict(recipe.pretrain))[key[9:]] = value
        elif key in ("init", "freeze_bn", "trainable_from", "freeze_body", "model", "pretrain_epochs", "start"):
            fields[key] = value
        else:
            settings = replace(settings, **{key: value})
    return replace(recipe, settings=settings, model_kwargs=kwargs, **fields)


def _datasets(max_side: int, holdout: str | None = None) -> dict[str, SpineDataset]:
    records = assign_splits(load_records(["synth"]), seed=0)
    full = SpineDataset(records, max_side=max_side, workers=2)
    out = {s: full.subset([i for i, r in enumerate(records) if r["split"] == s]) for s in ("train", "val", "test")}
    tr = out["train"]  # what run-all trains a detector on: images whose findings all have boxes
    out["det_train"] = DetectionTask().trainable(tr, "detector")
    if holdout:  # every image of another source, scored like validation
        out["holdout"] = DetectionTask().scorable(SpineDataset(load_records([holdout], max_side=max_side),
                                                               max_side=max_side, workers=2))
    return out


def _score(model, ds, device) -> dict:
    pred = predict(model, ds.with_transform(transforms_for(model, None, train=False)), device)
    det = detection_metrics(pred)
    return {"ap50_Lum": round(det["ap50_Lum"], 4), "ap50_sco": round(det["ap50_sco"], 4),
            "map_50": round(det["map_50"], 4),
            "auroc_implant": round(auroc(pred["labels"][:, 0], pred["probs"][:, 0]), 4),
            "auroc_scoliosis": round(auroc(pred["labels"][:, 1], pred["probs"][:, 1]), 4)}


_pretrained: dict[str, tuple[dict, float]] = {}


def _pretrain(kind: str, detector: str, sets: dict, device, seed: int, cache_dir: Path | None,
              epochs: int | None = None, extra: dict | None = None, start: bool = False) -> tuple[dict, float]:
    """Train the classifier a recipe transfers from, on the training split only, as run-all trains it
    (``extra``: TrainSettings fields on top of run-all's; ``start``: a body pre-training begins from the plan's
    ``start_from`` classifier, itself trained here first, as the runner does)."""
    key = f"{kind}:run-all" if kind != "body" else f"body:{detector}:e{epochs or QUICK.classifier.epochs}"
    if kind == "body" and start:
        key += ":start"
    if extra:
        key += ":" + ",".join(f"{k}={v}" for k, v in sorted(extra.items()))
    if key in _pretrained:
        return _pretrained[key]
    path = cache_dir / f"{key.replace(':', '_')}-s{seed}.pt" if cache_dir else None
    if path and path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        _pretrained[key] = (blob["state_dict"], float(blob["seconds"]))
        return _pretrained[key]
    if kind == "cls_inception_v3":
        model = create_model("cls_inception_v3", pretrained="none")
        # as run-all trains it: the profile's per-model settings (its 75 s, the spine-shape loss) on top of the
        # classifier's; before 2026-12-05 this was the plain 52 s recipe, and this script's Inception-v2 rows sat
        # below run-all's detector (unseen Lum AP 0.09-0.16 against 0.33-0.36)
        settings = QUICK.settings_for("cls_inception_v3", len(sets["train"]))
    elif kind == "body":
        arch = create_model(detector, pretrained="none", min_size=64, max_size=64).default_cfg["backbone"]
        model = body_classifier(arch.removeprefix("timm."))
        if start:
            plan = IN_DOMAIN[detector]
            start_body_classifier(model, plan, _pretrain(plan.start_from, detector, sets, device, seed, cache_dir)[0])
        # as the runner pre-trains it (runner._transfer_into): its own minimum input, the profile's pretrain_s
        settings = replace(QUICK.classifier, epochs=epochs or QUICK.classifier.epochs,
                           image_size=fit_min_input(QUICK.classifier.image_size, model.min_input_size),
                           time_budget_s=QUICK.model_settings.get(detector, {}).get("extra", {}).get("pretrain_s"))
    else:
        raise ValueError(f"unknown init {kind!r}")
    settings = replace(settings, **(extra or {}))
    torch.manual_seed(seed)
    hist = train_model(model, sets["train"], sets["val"], settings=settings, device=device, seed=seed,
                       progress=False)
    log.info("%s pre-trained in %.0f s: val implant AUROC %.3f", key, hist["train_seconds"],
             hist["history"][-1]["val_auroc_implant"])
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    _pretrained[key] = (sd, hist["train_seconds"])
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": sd, "seconds": hist["train_seconds"]}, path)
    return _pretrained[key]


def run_recipe(name: str, recipe: Recipe, sets: dict, device, seed: int = 0, cache_dir: Path | None = None,
               det_seed: int | None = None) -> dict:
    det_seed = seed if det_seed is None else det_seed
    row = {"recipe": name, "model": recipe.model, "init": recipe.init, "seed": seed, "det_seed": det_seed,
           "settings": repr(recipe.settings), "model_kwargs": repr(recipe.model_kwargs)}
    pretrain_s = 0.0
    state = None
    if recipe.init != "none":
        state, pretrain_s = _pretrain(recipe.init, recipe.model, sets, device, seed, cache_dir, recipe.pretrain_epochs,
                                      recipe.pretrain, recipe.start)
    torch.manual_seed(det_seed)
    model = create_model(recipe.model, pretrained="none", **recipe.model_kwargs)
    if state is not None:
        rep = init_backbone_from_classifier(model, state, source=f"in-domain:{recipe.init}",
                                            freeze_bn=recipe.freeze_bn, trainable_from=recipe.trainable_from,
                                            freeze_body=recipe.freeze_body, rename=recipe.rename)
        log.info("%s: %d loaded, %d missing", name, len(rep.loaded), len(rep.missing))
    s = recipe.settings
    empty = sets["val"].subset([])  # validation is scored below, outside the timed loop
    load = os.getloadavg()[0]
    hist = train_model(model, sets["det_train"], empty, settings=s, device=device, seed=det_seed,
                       progress=False)
    steps = sum(math.ceil(h["images"] / s.batch_size) for h in hist["history"])
    images = sum(h["images"] for h in hist["history"])
    t0 = time.perf_counter()
    val = _score(model, sets["val"], device)
    val_s = time.perf_counter() - t0
    row.update(steps=steps, images=images, train_seconds=round(hist["train_seconds"], 1),
               s_per_step=round(hist["train_seconds"] / max(1, steps), 2), val_seconds=round(val_s, 1),
               **{f"val_{k}": v for k, v in val.items()},
               pretrain_seconds=round(pretrain_s, 1), load_1min=round(max(load, os.getloadavg()[0]), 2),
               status="ok")
    if "holdout" in sets:
        hold = _score(model, sets["holdout"], device)
        row.update(holdout=len(sets["holdout"]), **{f"holdout_{k}": hold[k] for k in
                                                      ("ap50_Lum", "ap50_sco", "auroc_implant")})
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="*", default=None, help="recipe names (default: all)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override recipe fields for this run: TrainSettings fields (epochs=10 lr=2e-3), "
                         "'steps' (total steps: sets epochs), trainable_from, kw.<create_model kwarg>, or "
                         "pretrain.<TrainSettings field> (the classifier pre-training's, e.g. pretrain.aux_implant_weight=1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the classifier pre-training")
    ap.add_argument("--det-seed", type=int, default=None, help="seed of the detector's training (default: --seed)")
    ap.add_argument("--out", default=None, help="CSV (default benchmarks/results/detector_recipe_<device>.csv)")
    ap.add_argument("--holdout", default=None, metavar="SPEC",
                    help="also score all images of this data source, e.g. synth=DIR of another seed")
    ap.add_argument("--cache-dir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "spinebench_det_recipe"),
                    help="where pre-trained classifiers are kept between runs (never committed)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.list:
        for n, r in RECIPES.items():
            print(f"{n}: {r}")
        return 0
    names = args.recipes or list(RECIPES)
    if args.set:
        for n in names:
            if n in RECIPES:
                RECIPES[n + "@" + ",".join(args.set)] = _override(RECIPES[n], args.set)
        names = [n + "@" + ",".join(args.set) for n in names]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        ap.error(f"unknown recipes {unknown}; --list shows them")
    device = torch.device("cpu")
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"detector_recipe_{device.type}.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    sets = _datasets(QUICK.cache_side, args.holdout)
    for n in names:
        try:
            row = run_recipe(n, RECIPES[n], sets, device, args.seed, Path(args.cache_dir), args.det_seed)
        except Exception as e:  # noqa: BLE001 - one failing recipe becomes an error row
            log.exception("%s failed", n)
            row = {"recipe": n, "model": RECIPES[n].model, "status": f"error: {type(e).__name__}: {e}"}
        append_csv_row(out, row, COLUMNS)
        print({k: row.get(k) for k in COLUMNS if k not in ("settings", "model_kwargs")}, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
