"""``run-all`` and ``evaluate``: every registered model on the same split file, scored by the same protocol.

Layout of a run (``runs/<run-id>/``)::

    config.json                 arguments, profile, data specs, device, git commit
    split.csv                   image_id, patient_id, split: read by every model (and by later runs via --split-file)
    logs/<model>-s<seed>.csv    one row per epoch
    checkpoints/<model>-s<seed>.pt   written after every epoch: ``--resume RUN_DIR`` continues from it
    metrics/<model>-s<seed>.json     the result row plus training history (and, on CUDA, the model's peak memory)
    predictions/<model>-s<seed>.csv  test predictions (probabilities, decisions) per image
    leaderboard.csv             this run's rows
and appends the same rows to ``results/leaderboard.csv``; trained weights go to ``weights/``.

One model failing (an exception, a non-finite loss) becomes an ``error`` row and the others go on (timm's
benchmark habit): a long run never dies at model five of six.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import os
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from spinebench import FINDINGS
from spinebench.data.dataset import SpineDataset
from spinebench.data.records import boxes_cover_findings
from spinebench.data.sources import load_records
from spinebench.data.splits import apply_split_file, assign_splits, write_split_file
from spinebench.engine.device import available_cores, precision_of, resolve_device, seed_everything
from spinebench.engine.profiles import Profile, get_profile, profile_cache_side
from spinebench.engine.train import measure_latency, predict, train_model, transforms_for
from spinebench.engine.weights import load_weights, save_weights, trained_models
from spinebench.errors import SpinebenchError

log = logging.getLogger(__name__)


def _git_commit() -> str:
    from spinebench.evaluation.results import git_commit
    return git_commit()


def _decoded(records: list[dict], side: int) -> SpineDataset:
    """Every image decoded once and kept downscaled to ``side`` (decoding threads: up to 4 cores)."""
    return SpineDataset(records, max_side=side, workers=min(4, available_cores()))


def _split_datasets(records: list[dict], cache_side: int) -> dict[str, SpineDataset]:
    """Decode every image once (shared by all models of the run), then split into views."""
    full = _decoded(records, cache_side)
    out = {}
    for split in ("train", "val", "test"):
        idx = [i for i, r in enumerate(records) if r["split"] == split]
        out[split] = full.subset(idx)
    return out


def score_predictions(model_name: str, task: str, val_pred: dict, test_pred: dict, n_boot: int, seed: int) -> dict:
    """The shared protocol: thresholds chosen on validation, applied unchanged to test; detection mAP for detectors."""
    from spinebench.evaluation.metrics import choose_thresholds, evaluate_image_level

    thresholds = choose_thresholds(val_pred["labels"], val_pred["probs"])
    metrics = evaluate_image_level(test_pred["labels"], test_pred["probs"], test_pred["patient_ids"], thresholds,
                                   n_boot=n_boot, seed=seed)
    if task == "detection" and test_pred["detections"] is not None:
        metrics.update(detection_metrics(test_pred))
    return {"thresholds": np.asarray(thresholds).tolist(), "metrics": metrics}


def detection_metrics(pred: dict) -> dict:
    """COCO mAP of a detector's predictions (``predict`` output) over the images whose boxes are complete: an
    image with a positive finding but no box of its class cannot score boxes (``boxes_cover_findings``)."""
    from spinebench.evaluation.detection import detection_map

    keep = [i for i, t in enumerate(pred["targets"]) if boxes_cover_findings(pred["labels"][i], t["labels"].tolist())]
    if len(keep) < len(pred["targets"]):
        log.info("mAP over %d of %d images: the others have a positive finding without its box", len(keep),
                 len(pred["targets"]))
    return detection_map([pred["detections"][i] for i in keep], [pred["targets"][i] for i in keep])


def _with_complete_boxes(ds: SpineDataset, name: str) -> SpineDataset:
    """The images a detector can learn boxes from (see ``boxes_cover_findings``)."""
    keep = [i for i, r in enumerate(ds.records)
            if boxes_cover_findings([r[f] for f in FINDINGS], [b[4] for b in r.get("boxes") or []])]
    if len(keep) < len(ds):
        log.info("%s: %d training images left out, a positive finding without its box", name, len(ds) - len(keep))
    return ds.subset(keep)


def _write_predictions(path: Path, pred: dict, thresholds: Sequence[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "patient_id"] + [f"{k}_{f}" for f in FINDINGS for k in ("true", "prob", "pred")])
        for i, iid in enumerate(pred["image_ids"]):
            row = [iid, pred["patient_ids"][i]]
            for j, _ in enumerate(FINDINGS):
                p = float(pred["probs"][i, j])
                row += [int(pred["labels"][i, j]), f"{p:.6f}", int(p >= thresholds[j])]
            w.writerow(row)


def _model_kwargs(task: str, profile) -> dict:
    return dict(profile.detector_kwargs) if task == "detection" else {}


def run_all(*, data: Sequence[str] = ("synth",), profile: "str | Profile" = "quick", models: Sequence[str] | None = None,
            seeds: Sequence[int] = (0,), device: str = "auto", out: str | os.PathLike = "runs",
            results: str | os.PathLike = "results", weights_dir: str | os.PathLike = "weights",
            pretrained: str = "auto", image_size: int | None = None, split_file: str | None = None,
            split_mode: str = "patient", split_seed: int = 0, resume: str | os.PathLike | None = None,
            epochs: int | None = None, progress: bool = True, report: bool = True,
            keep_checkpoints: bool = False) -> Path:
    """Train and score ``models`` (default: the six models, and the Cobb model when ``data`` has landmarks).

    Returns the run folder. ``resume`` names an earlier run folder: its config and split are reused, finished
    models are skipped and an interrupted model continues from its last checkpoint. A model's checkpoint is
    deleted once its weights and row are saved, unless ``keep_checkpoints`` (they are 4x the model: 0.1-1.1 GB).
    ``run_summary.json`` records the run's wall time, bytes written and peak memory.
    """
    t_start, written_start = time.perf_counter(), _bytes_written()
    from spinebench.evaluation.results import append_rows, error_row
    from spinebench.models import list_models, model_info

    dist_rank, dist_world = _dist_init(device)
    prof = get_profile(profile) if isinstance(profile, str) else profile
    profile = prof.name
    dev = resolve_device(device if dist_world == 1 or device != "auto" else "auto")
    if dist_world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(dev)
    known = list_models()
    if models:
        unknown = [m for m in models if m not in known]
        if unknown:
            raise SpinebenchError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(known)}")
        models = list(models)
    else:
        # the paper's six, plus the Cobb landmark model when the data has landmarks (checked once loaded)
        models = [m for m in known if model_info(m)["task"] in ("classification", "detection", "cobb")]

    if resume:
        run_dir = Path(resume)
        cfg_path = run_dir / "config.json"
        if not cfg_path.is_file():
            raise SpinebenchError(f"cannot resume: {cfg_path} not found")
        cfg = json.loads(cfg_path.read_text())
        data, profile, seeds, models = cfg["data"], cfg["profile"], cfg["seeds"], cfg["models"]
        pretrained, image_size, epochs = cfg["pretrained"], cfg["image_size"], cfg.get("epochs")
        prof = get_profile(profile)
        split_file = str(run_dir / "split.csv")
        run_id = run_dir.name
    else:
        run_id = _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{profile}"
        run_dir = Path(out) / run_id
    _check_schedule(prof, models, epochs, image_size)
    if not keep_checkpoints:  # a finished model's checkpoint is deleted: writing one after its last epoch is waste
        prof = replace(prof, classifier=replace(prof.classifier, final_checkpoint=False),
                       detector=replace(prof.detector, final_checkpoint=False),
                       cobb={**prof.cobb, "final_checkpoint": False})

    records = load_records(data)
    if not records:
        raise SpinebenchError(f"no images in {' '.join(data)}")
    if split_file:
        apply_split_file(records, split_file)
    else:
        assign_splits(records, seed=split_seed, mode=split_mode)
    counts = {s: sum(r["split"] == s for r in records) for s in ("train", "val", "test")}
    if not any(r.get("landmarks") is not None for r in records):
        cobb = [m for m in models if model_info(m)["task"] == "cobb"]
        if cobb and len(cobb) == len(models):
            raise SpinebenchError(f"{', '.join(cobb)} needs vertebra landmarks; no image of {' '.join(data)} has "
                                  "them (aasce=PATH and synth do)")
        if cobb:
            log.info("%s skipped: no image of %s has vertebra landmarks", ", ".join(cobb), " ".join(data))
        models = [m for m in models if m not in cobb]
    if counts["train"] == 0 or counts["test"] == 0 or counts["val"] == 0:
        raise SpinebenchError(f"too few patients to split ({counts}); give more data")

    commit = _git_commit()
    if dist_rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not resume:
            write_split_file(records, run_dir / "split.csv")
            config = {"run_id": run_id, "data": list(data), "profile": profile, "models": models,
                      "seeds": list(seeds), "device": str(dev), "precision": precision_of(dev),
                      "pretrained": pretrained, "image_size": image_size, "epochs": epochs,
                      "split_mode": split_mode, "split_seed": split_seed, "split_counts": counts,
                      "git_commit": commit, "torch": torch.__version__, "world_size": dist_world,
                      "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            (run_dir / "config.json").write_text(json.dumps(config, indent=2))
    log.info("run %s: %d images (%s) on %s", run_id, len(records), counts, dev)
    sets = _split_datasets(records, prof.cache_side)

    rows = []
    bar = None
    if progress and dist_rank == 0:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(models) * len(seeds), desc="run-all", unit="model")
    for name in models:
        for seed in seeds:
            tag = f"{name}-s{seed}"
            metrics_path = run_dir / "metrics" / f"{tag}.json"
            if resume and metrics_path.is_file():
                rows.append(json.loads(metrics_path.read_text())["row"])
                if bar:
                    bar.update(1)
                continue
            context = dict(run_id=run_id, data=" ".join(data), seed=seed, device=str(dev),
                           precision=precision_of(dev), git_commit=commit, split_file=str(run_dir / "split.csv"),
                           n_train=counts["train"], n_val=counts["val"], n_test=counts["test"],
                           pretrained_mode=pretrained)
            if dev.type == "cuda":  # per-model peak: the caching allocator keeps the run's memory between models
                torch.cuda.reset_peak_memory_stats(dev)
            try:
                row, extra = _run_one(name, seed, prof, sets, dev, run_dir, pretrained, image_size, epochs,
                                      bool(resume), progress, dist_rank, dist_world, context, weights_dir,
                                      save=seed == seeds[0])
            except Exception as e:  # noqa: BLE001 - one failing model must not end the run
                log.error("%s failed: %s", tag, e)
                log.debug("%s", traceback.format_exc())
                row, extra = error_row(name, e, **context), {}
            if dev.type == "cuda":
                extra["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated(dev) / 2 ** 20, 1)
            rows.append(row)
            if dist_rank == 0:
                metrics_path.parent.mkdir(parents=True, exist_ok=True)
                metrics_path.write_text(json.dumps({"row": row, **extra}, indent=2, default=str))
                if row.get("status") == "ok" and not keep_checkpoints:
                    (run_dir / "checkpoints" / f"{tag}.pt").unlink(missing_ok=True)
            if bar:
                bar.update(1)
    if bar:
        bar.close()
    if dist_rank == 0:
        append_rows(run_dir / "leaderboard.csv", rows)
        append_rows(Path(results) / "leaderboard.csv", rows)
        if report:
            _make_report(run_dir)
        summary = {"wall_seconds": round(time.perf_counter() - t_start, 1),
                   "bytes_written": _bytes_written() - written_start, "peak_rss_mb": _peak_rss_mb()}
        (run_dir / "run_summary.json").write_text(json.dumps(summary, indent=2))
        log.info("run %s: %.0f s, %.1f MB written, peak memory %.0f MB", run_id, summary["wall_seconds"],
                 summary["bytes_written"] / 1e6, summary["peak_rss_mb"])
    _dist_done(dist_world)
    return run_dir


def _bytes_written() -> int:
    """Bytes this process has caused to be written to storage (Linux ``/proc/self/io``; 0 where unknown)."""
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _peak_rss_mb() -> float:
    """Peak resident memory of this process (MB)."""
    try:
        import resource
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    except (ImportError, OSError):
        return float("nan")


def _check_schedule(prof: Profile, models: Sequence[str], epochs: int | None, image_size: int | None) -> None:
    """Refuse an impossible --epochs / --image-size before minutes of data loading, not as error rows after."""
    from spinebench.models import model_info

    if epochs is not None and epochs < 1:
        raise SpinebenchError(f"--epochs must be at least 1 (got {epochs})")
    if image_size is None:
        return
    if image_size < 1:
        raise SpinebenchError(f"--image-size must be a positive number of pixels (got {image_size})")
    for name in models:
        info = model_info(name)
        if info["task"] != "classification" or not info.get("min_input_size"):
            continue
        size = prof.settings_for(name, info["task"], 1, image_size).image_size
        need = info["min_input_size"]
        if size[0] < need[0] or size[1] < need[1]:
            raise SpinebenchError(f"--image-size {image_size} is below {name}'s minimum input of {need[0]} x "
                                  f"{need[1]} pixels")


def _run_one(name, seed, prof, sets, dev, run_dir, pretrained, image_size, epochs, resume, progress, rank, world,
             context, weights_dir, save):
    from spinebench.evaluation.results import make_row
    from spinebench.models import create_model, model_info

    info = model_info(name)
    task = info["task"]
    seed_everything(seed)
    if task == "cobb":
        return _run_cobb(name, info, seed, prof, sets, dev, run_dir, pretrained, epochs, resume, progress, context,
                         weights_dir, save)
    kwargs = _model_kwargs(task, prof)
    model = create_model(name, pretrained=pretrained, **kwargs)
    train = _with_complete_boxes(sets["train"], name) if task == "detection" else sets["train"]
    settings = prof.settings_for(name, task, len(train), image_size)
    if epochs:
        settings = replace(settings, epochs=epochs)
    tag = f"{name}-s{seed}"
    hist = train_model(model, train, sets["val"], settings=settings, device=dev, seed=seed,
                       checkpoint_path=run_dir / "checkpoints" / f"{tag}.pt", resume=resume,
                       log_path=run_dir / "logs" / f"{tag}.csv", progress=progress, ddp_rank=rank, ddp_world=world)
    tf = transforms_for(model, settings.image_size, train=False)
    val_pred = hist["val_pred"] or predict(model, sets["val"].with_transform(tf), dev, batch_size=settings.batch_size)
    test_pred = predict(model, sets["test"].with_transform(tf), dev, batch_size=settings.batch_size)
    scored = score_predictions(name, task, val_pred, test_pred, prof.n_boot, seed)
    latency = measure_latency(model, sets["test"], dev, settings.image_size)
    input_size = list(settings.image_size or model.default_cfg["input_size"])
    if task == "detection":
        input_size = [kwargs.get("min_size", 0), kwargs.get("max_size", 0)]
    row = make_row(**context, model=name, task=task, paper_name=info.get("paper_name", ""),
                   pretrained=bool(model.pretrained_loaded), epochs=hist["epochs_run"],
                   input_size="x".join(str(int(v)) for v in input_size), params_m=round(info["params_m"], 3),
                   train_seconds=round(hist["train_seconds"], 1), latency_ms=round(latency, 2),
                   status="ok", **scored["metrics"])
    if rank == 0:
        _write_predictions(run_dir / "predictions" / f"{tag}.csv", test_pred, scored["thresholds"])
        if save:  # weights/ keeps the first seed's model; every seed's row goes to the leaderboard
            meta = {"model": name, "task": task, "thresholds": scored["thresholds"], "run_id": context["run_id"],
                    "data": context["data"], "seed": seed, "pretrained": bool(model.pretrained_loaded),
                    "input_size": input_size, "image_size": list(settings.image_size) if settings.image_size else None,
                    "cache_side": prof.cache_side,
                    "model_kwargs": kwargs, "metrics": {k: v for k, v in scored["metrics"].items()
                                                        if isinstance(v, (int, float))},
                    "git_commit": context["git_commit"], "device": context["device"],
                    "train_loss": hist["train_loss"], "best_epoch": hist["best_epoch"]}
            save_weights(model.cpu(), weights_dir, meta=meta)
    return row, {"history": hist["history"], "thresholds": scored["thresholds"], "best_epoch": hist["best_epoch"],
                 "train_loss": hist["train_loss"]}


def _with_landmarks(ds: SpineDataset) -> SpineDataset:
    return ds.subset([i for i, r in enumerate(ds.records) if r.get("landmarks") is not None])


def _run_cobb(name, info, seed, prof, sets, dev, run_dir, pretrained, epochs, resume, progress, context,
              weights_dir, save):
    """The landmark model: trained on the images that have landmarks, scored by SMAPE, angle MAE, grades, and
    by scoliosis (largest measured angle >= 10 degrees) on the same test split as the six."""
    from spinebench.engine.cobb_train import score_dataset, train_cobb
    from spinebench.evaluation.results import RESULT_COLUMNS, make_row
    from spinebench.models import create_model

    tr, va, te = (_with_landmarks(sets[s]) for s in ("train", "val", "test"))
    if not len(tr) or not len(va) or not len(te):
        raise SpinebenchError(f"{name} needs landmarks in every split; the data has {len(tr)}/{len(va)}/{len(te)} "
                              "train/val/test images with landmarks")
    cfg = dict(prof.cobb)
    input_size = tuple(cfg.pop("input_size"))
    if epochs:
        cfg["epochs"] = epochs
    kwargs = {"input_size": input_size}
    model = create_model(name, pretrained=pretrained, **kwargs)
    tag = f"{name}-s{seed}"
    hist = train_cobb(model, tr, va, device=dev, seed=seed, checkpoint_path=run_dir / "checkpoints" / f"{tag}.pt",
                      resume=resume, log_path=run_dir / "logs" / f"{tag}.csv", progress=progress, **cfg)
    metrics = score_dataset(model, te, dev, n_boot=prof.n_boot, seed=seed)  # the same scoring as evaluate
    latency = _cobb_latency(model, te, dev)
    row = make_row(**context, model=name, task="cobb", paper_name=info.get("paper_name", ""),
                   pretrained=bool(model.pretrained_loaded), epochs=hist["epochs_run"],
                   input_size="x".join(str(v) for v in input_size), params_m=round(info["params_m"], 3),
                   train_seconds=round(hist["train_seconds"], 1), latency_ms=round(latency, 2), status="ok",
                   **{k: v for k, v in metrics.items() if k in RESULT_COLUMNS and k not in context})
    if context["n_test"] != len(te):
        row["n_test"] = len(te)
    pa = np.asarray(metrics["pred_angles"])
    path = run_dir / "predictions" / f"{tag}-cobb.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "patient_id", "true_pt", "true_mt", "true_tl", "pred_pt", "pred_mt", "pred_tl"])
        for r, p in zip(te.records, pa):
            w.writerow([r["image_id"], r["patient_id"], r["cobb_pt"], r["cobb_mt"], r["cobb_tl"], *p.tolist()])
    if save:
        meta = {"model": name, "task": "cobb", "thresholds": [], "run_id": context["run_id"], "data": context["data"],
                "seed": seed, "pretrained": bool(model.pretrained_loaded), "input_size": list(input_size),
                "image_size": None, "cache_side": prof.cache_side, "model_kwargs": kwargs,
                "git_commit": context["git_commit"],
                "device": context["device"], "best_epoch": hist["best_epoch"],
                "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
        save_weights(model.cpu(), weights_dir, meta=meta)
    return row, {"history": hist["history"], "best_epoch": hist["best_epoch"],
                 "grade_confusion": metrics["grade_confusion"]}


@torch.inference_mode()
def _cobb_latency(model, ds: SpineDataset, device, n: int = 4) -> float:
    from spinebench.engine.cobb_train import predict_landmarks

    sub = ds.subset(range(min(n, len(ds))))
    predict_landmarks(model, sub.subset(range(1)), device)  # warm-up
    t0 = time.perf_counter()
    predict_landmarks(model, sub, device, batch_size=1)
    return (time.perf_counter() - t0) * 1000 / max(1, len(sub))


def evaluate(*, weights_dir: str | os.PathLike = "weights", data: Sequence[str] = ("synth",),
             models: Sequence[str] | None = None, device: str = "auto", split: str = "test",
             split_file: str | None = None, split_seed: int = 0, out: str | os.PathLike | None = None,
             n_boot: int = 1000, progress: bool = True) -> list[dict]:
    """Score saved models on any data without training (e.g. synthetic-trained models on hybrid-real images).

    Thresholds are the ones chosen on the training run's validation split (from the weights manifest): nothing
    is tuned on the data being evaluated. ``split`` = test | val | train | all picks the images scored.
    Rows have the leaderboard's columns.
    """
    from spinebench.evaluation.metrics import evaluate_image_level
    from spinebench.evaluation.results import append_rows, error_row, make_row
    from spinebench.models import model_info

    dev = resolve_device(device)
    available = trained_models(weights_dir)
    if not available:
        raise SpinebenchError(f"no trained models in {weights_dir}; run `python -m spinebench run-all` first")
    names = list(models) if models else available
    missing = [m for m in names if m not in available]
    if missing:
        raise SpinebenchError(f"no weights for {', '.join(missing)} in {weights_dir} (have: {', '.join(available)})")
    records = load_records(data)
    if split_file:
        apply_split_file(records, split_file)
    else:
        assign_splits(records, seed=split_seed)
    chosen = records if split == "all" else [r for r in records if r["split"] == split]
    if not chosen:
        raise SpinebenchError(f"no images in split {split!r} of {' '.join(data)}")
    by_side: dict[int, SpineDataset] = {}  # images decoded once per training downscale (usually one)
    commit = _git_commit()
    run_id = "eval-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    rows = []
    for name in names:
        try:
            model, entry = load_weights(name, weights_dir, dev)
            info = model_info(name)
            # the same aspect-kept downscale the model was trained on, then its own input transform
            side = profile_cache_side(entry)
            if side not in by_side:
                by_side[side] = _decoded(chosen, side)
            ds = by_side[side]
            if info["task"] == "cobb":
                rows.append(_evaluate_cobb(model, name, info, ds, dev, n_boot, commit, run_id, data, split_file,
                                           entry))
                continue
            size = tuple(entry["image_size"]) if entry.get("image_size") else None
            pred = predict(model, ds.with_transform(transforms_for(model, size, train=False)), dev)
            metrics = evaluate_image_level(pred["labels"], pred["probs"], pred["patient_ids"],
                                           entry["thresholds"], n_boot=n_boot, seed=0)
            if model.default_cfg["task"] == "detection":
                metrics.update(detection_metrics(pred))
            rows.append(make_row(run_id=run_id, model=name, task=info["task"], paper_name=info.get("paper_name", ""),
                                 data=" ".join(data), split_file=split_file or "", n_test=len(chosen),
                                 seed=entry.get("seed", ""), pretrained=bool(entry.get("pretrained")),
                                 device=str(dev), precision=precision_of(dev), params_m=round(info["params_m"], 3),
                                 input_size="x".join(str(v) for v in entry.get("input_size", [])),
                                 latency_ms=round(measure_latency(model, ds, dev, size), 2),
                                 git_commit=commit, status="ok", **metrics))
        except SpinebenchError:
            raise
        except Exception as e:  # noqa: BLE001
            log.error("%s failed: %s", name, e)
            rows.append(error_row(name, e, run_id=run_id, data=" ".join(data), device=str(dev)))
    if out:
        append_rows(Path(out), rows)
    return rows


def _evaluate_cobb(model, name, info, ds, dev, n_boot, commit, run_id, data, split_file, entry) -> dict:
    """A saved landmark model on the images of ``ds`` that have landmarks (others cannot be scored)."""
    from spinebench.engine.cobb_train import score_dataset
    from spinebench.evaluation.results import RESULT_COLUMNS, make_row

    te = _with_landmarks(ds)
    if not len(te):
        raise SpinebenchError(f"{name} scores Cobb angles, but none of the chosen images has landmarks")
    metrics = score_dataset(model, te, dev, n_boot=n_boot, seed=0)
    return make_row(run_id=run_id, model=name, task="cobb", paper_name=info.get("paper_name", ""),
                    data=" ".join(data), split_file=split_file or "", n_test=len(te), seed=entry.get("seed", ""),
                    pretrained=bool(entry.get("pretrained")), device=str(dev), precision=precision_of(dev),
                    params_m=round(info["params_m"], 3),
                    input_size="x".join(str(v) for v in entry.get("input_size", [])),
                    latency_ms=round(_cobb_latency(model, te, dev), 2), git_commit=commit, status="ok",
                    **{k: v for k, v in metrics.items() if k in RESULT_COLUMNS})


def _make_report(run_dir: Path) -> None:
    try:
        from spinebench import figures
    except ImportError:
        return
    try:
        figures.build_report(run_dir=run_dir, out=run_dir / "report")
    except Exception as e:  # noqa: BLE001 - a figure problem must not lose the run's results
        log.warning("report for %s failed: %s", run_dir, e)


def _dist_init(device: str) -> tuple[int, int]:
    """torchrun sets WORLD_SIZE/RANK: start DistributedDataParallel (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def _dist_done(world: int) -> None:
    if world > 1:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
