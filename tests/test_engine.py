"""The training engine and run-all on tiny generated data: every registered model trains one epoch and is scored,
a resumed run gives the same result, a diverging model becomes an error row, DDP runs on gloo with 2 processes."""

from __future__ import annotations

import csv
import json
import math
import os
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from spinebench import LABEL_MAP
from spinebench.data.dataset import SpineDataset
from spinebench.data.sources import load_records
from spinebench.data.splits import assign_splits
from spinebench.engine.profiles import Profile, get_profile
from spinebench.engine.train import TrainSettings, train_model
from spinebench.evaluation.results import read_rows
from spinebench.models import create_model, list_models, model_info

TINY = Profile(
    name="tiny", cache_side=96,
    classifier=TrainSettings(epochs=1, batch_size=8, lr=1e-3, image_size=(64, 64)),
    detector=TrainSettings(epochs=1, batch_size=2, lr=1e-4, max_steps_per_epoch=2, val_every=0),
    detector_kwargs={"min_size": 96, "max_size": 128, "class_nms_thresh": {"Lum": 0.3}},
    classifier_sizes={"cls_inception_v3": (75, 75)},
    n_boot=20,
)


def _six() -> list[str]:
    return [m for m in list_models() if model_info(m)["task"] in ("classification", "detection")]


def test_registry_has_the_paper_six():
    six = _six()
    assert {"cls_resnet50", "cls_densenet121", "cls_squeezenet1_1", "cls_inception_v3",
            "det_faster_rcnn_inception_v2", "det_faster_rcnn_inception_resnet_v2"} <= set(six)


@pytest.mark.slow
def test_run_all_every_model_one_epoch(tiny_data, tmp_path, capsys):
    from spinebench.engine.runner import run_all
    from spinebench.engine.weights import load_weights, read_weights_manifest

    run_dir = run_all(data=[tiny_data], profile=TINY, models=_six(), device="cpu", out=tmp_path / "runs",
                      results=tmp_path / "results", weights_dir=tmp_path / "weights", pretrained="none",
                      progress=False, report=False)
    rows = read_rows(tmp_path / "results" / "leaderboard.csv")
    assert [r["model"] for r in rows] == _six()
    for r in rows:
        assert r["status"] == "ok", r["error"]
        assert r["pretrained"] in (False, "False", 0)
        for key in ("any_sensitivity", "any_specificity", "accuracy", "loss"):
            assert not math.isnan(float(r[key])), (r["model"], key)
        assert 0 <= float(r["accuracy"]) <= 1
        assert float(r["latency_ms"]) > 0
    det = [r for r in rows if r["task"] == "detection"]
    assert all(r["map_50"] != "" for r in det)
    # every model's weights load back (weights_only) and match the manifest
    manifest = read_weights_manifest(tmp_path / "weights")
    assert set(manifest) == set(_six())
    model, entry = load_weights("cls_squeezenet1_1", tmp_path / "weights")
    assert len(entry["thresholds"]) >= 2 and entry["pretrained"] is False
    det, _ = load_weights("det_faster_rcnn_inception_v2", tmp_path / "weights")  # built as trained, NMS included
    assert det.class_nms_thresh == {LABEL_MAP["Lum"]: 0.3} and det.default_cfg["min_size"] == 96
    for sub in ("config.json", "split.csv", "leaderboard.csv"):
        assert (run_dir / sub).is_file()
    # a finished model's checkpoint is deleted once its weights are saved; the run says what it wrote
    assert not list((run_dir / "checkpoints").glob("*.pt"))
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert summary["bytes_written"] > sum(f.stat().st_size for f in (tmp_path / "weights").glob("*.pt")) * 0.5
    assert summary["wall_seconds"] > 0 and summary["peak_rss_mb"] > 100
    assert len(list((run_dir / "predictions").glob("*.csv"))) == len(_six())
    # the training downscale is recorded, so evaluate/predict/measure preprocess as in training
    assert {e["cache_side"] for e in manifest.values()} == {TINY.cache_side}

    # evaluate: saved models scored without training, rows with the leaderboard's columns, validation thresholds
    from spinebench.engine.runner import evaluate
    from spinebench.evaluation.results import RESULT_COLUMNS

    names = ["cls_squeezenet1_1", "det_faster_rcnn_inception_v2"]
    ev = evaluate(weights_dir=tmp_path / "weights", data=[tiny_data], models=names, device="cpu", split="all",
                  out=tmp_path / "eval.csv", n_boot=20, progress=False)
    assert [r["model"] for r in ev] == names and all(r["status"] == "ok" for r in ev), ev
    written = read_rows(tmp_path / "eval.csv")
    assert list(written[0]) == list(RESULT_COLUMNS) and len(written) == 2
    assert all(int(r["n_test"]) > int(rows[0]["n_test"]) for r in written)  # split=all scores every image
    assert not math.isnan(float(written[0]["any_sensitivity"]))
    # on the run's own test split, evaluate reproduces run-all's numbers (same preprocessing, same thresholds)
    same = evaluate(weights_dir=tmp_path / "weights", data=[tiny_data], models=names, device="cpu",
                    split_file=str(run_dir / "split.csv"), n_boot=0, progress=False)
    by_model = {r["model"]: r for r in rows}
    for r in same:
        keys = ("any_sensitivity", "any_specificity", "accuracy", "loss", "implant_auroc") + \
            (("map_50",) if r["task"] == "detection" else ())
        for key in keys:
            assert float(r[key]) == pytest.approx(float(by_model[r["model"]][key]), abs=1e-6, nan_ok=True), key
    # the CLI appends to the same file and prints only its own rows
    from spinebench.cli import main

    assert main(["-q", "evaluate", "--weights", str(tmp_path / "weights"), "--data", tiny_data, "--models",
                 "cls_squeezenet1_1", "--on", "all", "--n-boot", "10", "--out", str(tmp_path / "eval.csv")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("cls_") or line.startswith("det_") for line in printed) == 1
    paper_line = next(line for line in printed if "the paper" in line)  # the paper's SqueezeNet beside ours
    assert "0.890" in paper_line and "0.850" in paper_line
    assert printed[-1].startswith("wrote 1 row to") and len(read_rows(tmp_path / "eval.csv")) == 3


def test_evaluate_rows_say_pretrained_only_for_imagenet_weights(tiny_data, tmp_path):
    """A row's ``pretrained`` column means ImageNet weights, in ``evaluate`` as in ``run-all``: a detector started
    in-domain from the run's own classifier (its record's ``pretrained`` "in-domain:cls_inception_v3") is scored
    False, a model whose record says ImageNet weights were loaded True; the record keeps where it started."""
    from spinebench.engine.runner import evaluate
    from spinebench.engine.weights import save_weights
    from spinebench.weights import trained_records

    kwargs = {"min_size": 96, "max_size": 128, "fpn_channels": 32}
    started = {"det_faster_rcnn_inception_v2": ("in-domain:cls_inception_v3", kwargs, None),
               "cls_squeezenet1_1": (True, {}, [64, 64])}
    for name, (pretrained, kw, size) in started.items():
        save_weights(create_model(name, pretrained="none", **kw), tmp_path / "w", meta={
            "model": name, "task": model_info(name)["task"], "thresholds": [0.5, 0.5], "image_size": size,
            "model_kwargs": kw, "run_id": "20250101-000000-tiny", "cache_side": 96, "pretrained": pretrained})
    rows = evaluate(weights_dir=tmp_path / "w", data=[tiny_data], models=list(started), device="cpu", split="all",
                    n_boot=0, progress=False)
    assert {r["model"]: r["pretrained"] for r in rows} == {"det_faster_rcnn_inception_v2": False,
                                                           "cls_squeezenet1_1": True}
    records = trained_records(tmp_path / "w")
    assert records["det_faster_rcnn_inception_v2"].pretrained == "in-domain:cls_inception_v3"
    assert not records["det_faster_rcnn_inception_v2"].imagenet and records["cls_squeezenet1_1"].imagenet


def _tiny_sets(spec):
    recs = assign_splits(load_records([spec]), seed=0)
    full = SpineDataset(recs, max_side=96)
    idx = {s: [i for i, r in enumerate(recs) if r["split"] == s] for s in ("train", "val", "test")}
    return full.subset(idx["train"]), full.subset(idx["val"])


def test_resume_continues_to_the_same_result(tiny_data, tmp_path):
    tr, va = _tiny_sets(tiny_data)
    settings = TrainSettings(epochs=2, batch_size=8, lr=1e-3, image_size=(48, 48))

    def fresh():
        torch.manual_seed(0)
        return create_model("cls_squeezenet1_1", pretrained="none")

    straight = fresh()
    h1 = train_model(straight, tr, va, settings=settings, device=torch.device("cpu"), seed=3, progress=False)
    ckpt = tmp_path / "ck.pt"

    class Killed(Exception):
        pass

    def kill(row):
        raise Killed

    with pytest.raises(Killed):
        train_model(fresh(), tr, va, settings=settings, device=torch.device("cpu"), seed=3, checkpoint_path=ckpt,
                    progress=False, on_epoch_end=kill)
    # a killed run: a new process builds the model again and resumes from the checkpoint
    resumed = create_model("cls_squeezenet1_1", pretrained="none")
    blob = torch.load(ckpt, weights_only=True)
    assert blob["epoch"] == 0
    h2 = train_model(resumed, tr, va, settings=settings, device=torch.device("cpu"), seed=3, checkpoint_path=ckpt,
                     resume=True, progress=False)
    assert len(h2["history"]) == 2
    assert h2["history"][-1]["val_loss"] == pytest.approx(h1["history"][-1]["val_loss"], rel=1e-5)
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k


def test_non_finite_loss_becomes_an_error_row_and_others_go_on(tiny_data, tmp_path):
    from spinebench.engine.runner import run_all

    bad = replace(TINY, name="bad", classifier=replace(TINY.classifier, lr=float("nan"), epochs=2))
    run_all(data=[tiny_data], profile=bad, models=["cls_squeezenet1_1"], device="cpu", out=tmp_path / "runs",
            results=tmp_path / "results", weights_dir=tmp_path / "w", pretrained="none", progress=False,
            report=False)
    rows = read_rows(tmp_path / "results" / "leaderboard.csv")
    assert rows[0]["status"] == "error"
    assert "non-finite" in rows[0]["error"] or "nan" in rows[0]["error"].lower()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, spec: str, out: str) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from spinebench.engine.runner import run_all

    run_all(data=[spec], profile=TINY, models=["cls_squeezenet1_1"], device="cpu", out=f"{out}/runs",
            results=f"{out}/results", weights_dir=f"{out}/w", pretrained="none", progress=False, report=False)


@pytest.mark.slow
def test_ddp_two_processes_on_gloo(tiny_data, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), tiny_data, str(tmp_path)), nprocs=2, join=True)
    rows = read_rows(tmp_path / "results" / "leaderboard.csv")
    assert len(rows) == 1 and rows[0]["status"] == "ok", rows[0].get("error")
    assert (tmp_path / "w" / "cls_squeezenet1_1.pt").is_file()


@pytest.mark.slow
def test_run_all_trains_and_scores_the_cobb_model(tmp_path):
    from spinebench.data import synth
    from spinebench.engine.runner import run_all

    synth.generate(tmp_path / "synth", n=30, seed=1, workers=1, progress=False)
    prof = replace(TINY, cache_side=160, cobb=TrainSettings(image_size=(128, 64), epochs=1, batch_size=4,
                                                            max_steps_per_epoch=2))
    cobb = [m for m in list_models() if model_info(m)["task"] == "cobb"]
    run_dir = run_all(data=[f"synth={tmp_path / 'synth'}"], profile=prof, models=cobb, device="cpu",
                      out=tmp_path / "runs", results=tmp_path / "results", weights_dir=tmp_path / "w",
                      pretrained="none", progress=False, report=False)
    rows = read_rows(tmp_path / "results" / "leaderboard.csv")
    assert sorted(r["model"] for r in rows) == sorted(cobb) and len(cobb) == 2
    for row in rows:
        assert row["status"] == "ok", row["error"]
        assert row["task"] == "cobb" and 0 <= float(row["smape"]) <= 100
        assert float(row["smape_lo"]) <= float(row["smape"]) <= float(row["smape_hi"])
        with open(run_dir / "predictions" / f"{row['model']}-s0-cobb.csv") as f:
            preds = list(csv.DictReader(f))
        assert preds and {"true_pt", "pred_pt"} <= set(preds[0])
    # the corner regression's offset gain is chosen on validation and kept with its weights (the heatmaps have none)
    from spinebench.tasks.cobb import GAINS
    from spinebench.weights import read_records

    records = read_records(tmp_path / "w")
    regress = records["cobb_regress_resnet10t"]
    gain = regress.extra["calibration"]["offset_gain"]
    assert gain in GAINS and math.isclose(float(regress.load().offset_gain), gain, rel_tol=1e-6)
    assert "calibration" not in records["cobb_vertebra_resnet34"].extra


def test_each_profile_trains_its_own_cobb_model_unless_one_is_named():
    from spinebench.engine.runner import _choose_models

    for name, cobb in (("quick", "cobb_regress_resnet10t"), ("paper", "cobb_vertebra_resnet34")):
        prof = get_profile(name)
        chosen = _choose_models(None, prof)
        assert prof.cobb_model == cobb and [m for m in chosen if model_info(m)["task"] == "cobb"] == [cobb]
        assert set(_six()) <= set(chosen)
    named = ["cobb_vertebra_resnet34", "cls_resnet50"]
    assert _choose_models(named, get_profile("quick")) == named


class _ShapeRecorder(torch.nn.Module):
    """A stand-in model that records whether cuDNN autotuning was on when it ran (and answers like its task)."""

    def __init__(self, task: str):
        super().__init__()
        self.default_cfg = {"task": task, "name": f"fake_{task}"}
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[bool] = []

    def forward(self, x, targets=None):
        self.seen.append(torch.backends.cudnn.benchmark)
        if self.default_cfg["task"] == "detection":
            return [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64),
                     "scores": torch.zeros(0)} for _ in x]
        return torch.zeros((x.shape[0], 2)) + self.w


def test_detectors_run_without_cudnn_autotuning(tiny_data, monkeypatch):
    """Detectors see a new input shape for most images, so per-shape autotuning is off for them (and restored)."""
    from spinebench.engine.train import predict

    ds = SpineDataset(assign_splits(load_records([tiny_data]), seed=0)[:4], max_side=96)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    det, cls = _ShapeRecorder("detection"), _ShapeRecorder("classification")
    predict(det, ds, torch.device("cpu"))
    predict(cls, ds.with_transform(lambda item, rng: dict(item, image=item["image"][:, :64, :32])),
            torch.device("cpu"))
    assert det.seen and not any(det.seen)
    assert cls.seen and all(cls.seen)
    assert torch.backends.cudnn.benchmark is True  # the caller's setting is back


def test_paper_48_pixel_inputs(tiny_data, tmp_path):
    """--image-size 48 reproduces the paper's classifier inputs; Inception-v3 gets its minimum (75) and says so."""
    from spinebench.engine.runner import run_all
    from spinebench.engine.weights import read_weights_manifest

    names = ["cls_squeezenet1_1", "cls_inception_v3"]
    run_all(data=[tiny_data], profile=TINY, models=names, device="cpu", out=tmp_path / "runs",
            results=tmp_path / "results", weights_dir=tmp_path / "weights", pretrained="none", image_size=48,
            progress=False, report=False)
    rows = {r["model"]: r for r in read_rows(tmp_path / "results" / "leaderboard.csv")}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert rows["cls_squeezenet1_1"]["input_size"] == "48x48"
    assert rows["cls_inception_v3"]["input_size"] == "75x75"
    manifest = read_weights_manifest(tmp_path / "weights")
    assert manifest["cls_squeezenet1_1"]["image_size"] == [48, 48]  # predict/evaluate resize to what was trained


def test_images_without_the_box_of_their_finding_do_not_score_or_train_boxes(tiny_data):
    """An implant-positive film without a Lum box (AASCE's post-operative films) is left out of box training
    and of mAP: a correct detection on it would otherwise count as a false positive."""
    from spinebench.data.records import boxes_cover_findings
    from spinebench.tasks.detection import DetectionTask, detection_metrics

    assert boxes_cover_findings([1, 0], [1]) and boxes_cover_findings([0, 0], [])
    assert not boxes_cover_findings([1, 1], [2]) and not boxes_cover_findings([1, 0], [])

    box = torch.tensor([[10.0, 10.0, 30.0, 30.0]])
    one = torch.tensor([1])
    hit = {"boxes": box, "scores": torch.tensor([0.9]), "labels": one}
    sure = {"boxes": box, "scores": torch.tensor([0.95]), "labels": one}  # ranks first: an FP unless left out
    pred = {"detections": [hit, sure],
            "targets": [{"boxes": box, "labels": one}, {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0)}],
            "labels": np.array([[1.0, 0.0], [1.0, 0.0]])}  # the second film has an implant but no box
    assert detection_metrics(pred)["map_50"] == pytest.approx(1.0)
    from spinebench.evaluation.detection import detection_map
    assert detection_map(pred["detections"], pred["targets"])["map_50"] < 1.0  # what it used to score

    recs = assign_splits(load_records([tiny_data]), seed=0)
    recs[0] = dict(recs[0], implant=1, boxes=[])
    ds = SpineDataset(recs, max_side=96)
    kept = DetectionTask().trainable(ds, "det")
    assert len(kept) == len(ds) - 1 and recs[0]["image_id"] not in {r["image_id"] for r in kept.records}


def test_films_without_scoliosis_give_hard_negatives_over_their_column(synth_sets, tiny_data):
    """``sco_hard_negatives`` = n: each film without scoliosis gets n boxes labelled 0, inside the film: first the
    box of its largest (sub-10 degree) curve, drawn as a ``sco`` box is, then boxes over 4-12 vertebrae of its
    column, 1-3 times its width, centred on it; in the flipped film's frame when the film was flipped. A scoliotic
    film and a film without landmarks (folder data) get none; without the setting the targets are the boxes."""
    from spinebench.cobb import cobb_angles
    from spinebench.data.dataset import collate_dicts
    from spinebench.data.transforms import DetectorTransform
    from spinebench.tasks.detection import _targets, hard_negative_boxes

    train, val = synth_sets
    items = [train[i] for i in range(len(train))] + [val[i] for i in range(len(val))]
    normal = [it for it in items if it["labels"][1] < 0.5]
    assert normal and len(normal) < len(items)  # both kinds among the 12 films
    for it in items:
        h, w = it["image"].shape[-2:]
        neg = hard_negative_boxes(it["landmarks"], float(it["labels"][1]), h, w, n=8, rng=np.random.default_rng(0))
        if it["labels"][1] > 0.5:
            assert neg.shape == (0, 4)
            continue
        assert neg.shape == (8, 4)
        assert (neg[:, 0] >= 0).all() and (neg[:, 2] <= w).all() and (neg[:, 1] >= 0).all() and (neg[:, 3] <= h).all()
        assert (neg[:, 2] > neg[:, 0]).all() and (neg[:, 3] > neg[:, 1]).all()
        x0, y0, x1, y1 = neg[0].tolist()
        i, j = cobb_angles(it["landmarks"].double().numpy()).largest[2]
        curve = it["landmarks"][4 * i: 4 * (j + 1)]
        assert x0 <= float(curve[:, 0].min()) and float(curve[:, 0].max()) <= x1  # the curve's vertebrae inside
        assert y0 <= float(curve[:, 1].min()) and float(curve[:, 1].max()) <= y1
        lm = it["landmarks"]
        for bx in neg[1:]:  # over the column: its centre line crosses every box
            inside = lm[(lm[:, 1] >= bx[1]) & (lm[:, 1] <= bx[3])]
            assert len(inside) >= 8 and bx[0] <= float(inside[:, 0].mean()) <= bx[2]
        torch.testing.assert_close(neg[:1], hard_negative_boxes(it["landmarks"], 0.0, h, w))  # n=1: the first
    # through a flip, the box follows the flipped landmarks
    flip = DetectorTransform(train=True)
    it = normal[0]
    seed = next(s for s in range(20) if np.random.default_rng(s).random() < 0.5)  # the transform's flip draw
    flipped = flip(it, np.random.default_rng(seed))
    h, w = it["image"].shape[-2:]
    a = hard_negative_boxes(it["landmarks"], 0.0, h, w)[0]
    b = hard_negative_boxes(flipped["landmarks"], 0.0, h, w)[0]
    torch.testing.assert_close(b, torch.stack([w - a[2], a[1], w - a[0], a[3]]), atol=1e-3, rtol=0)

    batch = collate_dicts(items[:6])
    plain, hard = _targets(batch, "cpu"), _targets(batch, "cpu", hard_negatives=3)
    for k, (p, t) in enumerate(zip(plain, hard)):
        torch.testing.assert_close(p["boxes"], batch["boxes"][k])
        extra = 0 if batch["labels"][k, 1] > 0.5 else 3
        assert len(t["boxes"]) == len(p["boxes"]) + extra and (t["labels"] == 0).sum() == extra
        torch.testing.assert_close(t["boxes"][:len(p["boxes"])], p["boxes"])
    folder = SpineDataset(load_records([tiny_data]), max_side=96)
    assert all(hard_negative_boxes(folder[i]["landmarks"], 0.0, 96, 48).shape == (0, 4) for i in range(3))
    quick = get_profile("quick")
    assert quick.settings_for("det_faster_rcnn_inception_v2", 100).extra["sco_hard_negatives"] == 8


def test_checkpoint_stores_the_best_weights_once(tmp_path):
    """When the checkpoint's epoch is the best one its weights are stored once, and resuming puts them back."""
    from spinebench.engine.device import rng_state
    from spinebench.engine.train import _save_atomic, best_for_checkpoint, restore_checkpoint

    def parts():
        net = torch.nn.Linear(3, 2)
        opt = torch.optim.AdamW(net.parameters())
        return net, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)

    net, opt, sched = parts()
    best = {k: v.clone() for k, v in net.state_dict().items()}
    assert best_for_checkpoint(best, best_epoch=3, epoch=2) is None  # epoch index 2 is the 3rd epoch: the best
    assert best_for_checkpoint(best, best_epoch=2, epoch=2) is best
    _save_atomic({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                  "epoch": 2, "best_epoch": 3, "best_state": best_for_checkpoint(best, 3, 2), "rng": rng_state()},
                 tmp_path / "c.pt")
    fresh, opt2, sched2 = parts()
    state = restore_checkpoint(tmp_path / "c.pt", fresh, opt2, sched2)
    assert set(state["best_state"]) == set(best)
    assert all(torch.equal(state["best_state"][k], best[k]) for k in best)


def test_checkpoints_are_written_by_time_and_after_the_last_epoch(tiny_data, tmp_path):
    """With a checkpoint interval longer than the run, only the last epoch writes one; 0 writes every epoch."""
    tr, va = _tiny_sets(tiny_data)
    writes = []

    def spy(row):
        writes.append((tmp_path / "ck.pt").is_file())

    settings = TrainSettings(epochs=3, batch_size=8, lr=1e-3, image_size=(48, 48), checkpoint_every_s=3600)
    torch.manual_seed(0)
    train_model(create_model("cls_squeezenet1_1", pretrained="none"), tr, va, settings=settings,
                device=torch.device("cpu"), seed=0, checkpoint_path=tmp_path / "ck.pt", progress=False,
                on_epoch_end=spy)
    assert writes == [False, False, True]
    assert torch.load(tmp_path / "ck.pt", weights_only=True)["epoch"] == 2
    # run-all deletes a finished model's checkpoint, so it asks for none after the last epoch
    train_model(create_model("cls_squeezenet1_1", pretrained="none"), tr, va,
                settings=replace(settings, final_checkpoint=False), device=torch.device("cpu"), seed=0,
                checkpoint_path=tmp_path / "none.pt", progress=False)
    assert not (tmp_path / "none.pt").exists()
    from spinebench.engine.train import checkpoint_due
    import time
    assert checkpoint_due(time.perf_counter(), 0, False) and checkpoint_due(time.perf_counter(), 60, True)
    assert not checkpoint_due(time.perf_counter(), 60, False) and checkpoint_due(time.perf_counter() - 61, 60, False)


def test_run_all_keeps_checkpoints_when_asked(tiny_data, tmp_path):
    from spinebench.engine.runner import run_all

    run_dir = run_all(data=[tiny_data], profile=TINY, models=["cls_squeezenet1_1"], device="cpu",
                      out=tmp_path / "runs", results=tmp_path / "results", weights_dir=tmp_path / "weights",
                      pretrained="none", progress=False, report=False, keep_checkpoints=True)
    assert (run_dir / "checkpoints" / "cls_squeezenet1_1-s0.pt").is_file()


def test_train_cli_trains_one_model_with_overrides_and_a_time_budget(tiny_data, tmp_path, monkeypatch):
    """`spinebench train MODEL` is run-all for one model: same loop, run folder and weights record; its flags
    override the profile's settings, are recorded, and a time budget ends training after the epoch crossing it."""
    from spinebench.cli import main
    from spinebench.weights import read_records

    monkeypatch.chdir(tmp_path)
    assert main(["-q", "train", "cls_squeezenet1_1", "--data", tiny_data, "--epochs", "3", "--time-budget", "0.001",
                 "--lr", "3e-4", "--input-size", "48", "40", "--no-report", "--pretrained", "none"]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["models"] == ["cls_squeezenet1_1"]
    assert config["overrides"] == {"lr": 3e-4, "time_budget_s": 0.001, "image_size": [48, 40], "epochs": 3}
    with open(run_dir / "logs" / "cls_squeezenet1_1-s0.csv") as f:
        log = list(csv.DictReader(f))
    # the budget ended it inside epoch 1 of 3 (one step), the rate annealed by the clock, and it was validated
    assert len(log) == 1 and int(log[0]["images"]) == 16 and float(log[0]["lr"]) == 0
    assert math.isfinite(float(log[0]["val_loss"]))
    rec = read_records(tmp_path / "weights")["cls_squeezenet1_1"]
    assert rec.image_size == [48, 40] and rec.pretrained is False and rec.seed == 0
    assert rec.split_file == str(Path("runs") / run_dir.name / "split.csv") and rec.run_id == run_dir.name
    assert rec.data_kind == "real" and rec.extra["profile"] == "quick" and rec.metrics["implant_auroc"] >= 0
    row = read_rows(tmp_path / "results" / "leaderboard.csv")[0]
    assert row["status"] == "ok" and row["epochs"] == 1 and row["input_size"] == "48x40"


def test_run_all_cli_refuses_a_time_budget_that_is_not_positive(tiny_data, tmp_path, capsys):
    """run-all takes --time-budget as train does (the GPU lanes of benchmarks/gpu_paper.py use it); zero or a
    negative budget is one line on stderr before any data is loaded, and nothing is written."""
    from spinebench.cli import main

    for bad in ("0", "-5"):
        rc = main(["-q", "run-all", "--data", tiny_data, "--models", "cls_squeezenet1_1", "--time-budget", bad,
                   "--out", str(tmp_path / "runs"), "--no-report"])
        err = capsys.readouterr().err
        assert rc == 2 and "--time-budget must be a positive number of seconds" in err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()
    rc = main(["-q", "run-all", "--data", tiny_data, "--aux-shape-weight", "-1", "--out", str(tmp_path / "runs")])
    assert rc == 2 and "--aux-shape-weight must be 0 (off) or positive" in capsys.readouterr().err


def test_run_all_refuses_an_unknown_training_setting(tiny_data, tmp_path):
    from spinebench.engine.runner import run_all
    from spinebench.errors import SpinebenchError

    with pytest.raises(SpinebenchError, match="unknown training setting.*learning_rate"):
        run_all(data=[tiny_data], profile=TINY, models=["cls_squeezenet1_1"], device="cpu", out=tmp_path / "r",
                overrides={"learning_rate": 1.0}, progress=False, report=False)
    assert not (tmp_path / "r").exists()


def test_time_budget_anneals_the_learning_rate_by_the_clock():
    """With a time budget the cosine decay follows the clock when it is further along than the steps, so a model
    stopped by its budget ends at a low rate, not mid-schedule."""
    from spinebench.engine.train import _schedule

    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    frac = {"t": 0.0}
    sched = _schedule(opt, total_steps=1000, warmup_steps=0, clock=lambda: frac["t"])
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0, abs=1e-4)  # step 1 of 1000, no time used
    frac["t"] = 0.5
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5, abs=1e-3)  # half the budget: half-way down the cosine
    frac["t"] = 1.0
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)


def test_precision_setting_drives_autocast_and_is_recorded(tiny_data, tmp_path):
    """bf16-mixed only where the CPU has native bf16 (else fp32 with a warning); fp32 when asked; rows say which."""
    from spinebench.engine import device as D
    from spinebench.engine.runner import run_all
    from spinebench.errors import SpinebenchError

    cpu, lin, x = torch.device("cpu"), torch.nn.Linear(4, 3), torch.rand(2, 4)
    try:
        D.set_precision("bf16-mixed")
        with D.autocast(cpu):
            y = lin(x)
        assert (y.dtype == torch.bfloat16) == D.cpu_has_bf16()
        assert D.precision_of(cpu) == ("bf16-mixed" if D.cpu_has_bf16() else "fp32")
        with D.scoring_precision(), D.autocast(cpu):  # scores are fp32 whatever the training precision
            assert lin(x).dtype == torch.float32
        assert D.precision_of(cpu) == ("bf16-mixed" if D.cpu_has_bf16() else "fp32")  # restored
        D.set_precision("fp32")
        with D.autocast(cpu):
            assert lin(x).dtype == torch.float32
        with pytest.raises(SpinebenchError, match="unknown precision 'fp16'"):
            D.set_precision("fp16")
        run_dir = run_all(data=[tiny_data], profile=TINY, models=["cls_squeezenet1_1"], device="cpu",
                          out=tmp_path / "runs", results=tmp_path / "results", weights_dir=tmp_path / "weights",
                          pretrained="none", progress=False, report=False, precision="fp32")
        assert json.loads((run_dir / "config.json").read_text())["precision"] == "fp32"
        assert [r["precision"] for r in read_rows(run_dir / "leaderboard.csv")] == ["fp32"]
    finally:
        D.set_precision("auto")


def test_narrow_strided_convolutions_run_in_fp32_under_cpu_bf16():
    """oneDNN's bf16 kernel miscomputes strided convolutions with a one-pixel-wide output: those run in fp32."""
    from spinebench.engine.device import guard_bf16_convs

    plain = torch.nn.Conv2d(8, 16, 3, stride=2)
    conv = guard_bf16_convs(torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, stride=2)))[0]
    conv.load_state_dict(plain.state_dict())
    assert isinstance(conv, torch.nn.Conv2d) and conv.state_dict().keys() == plain.state_dict().keys()
    narrow, wide = torch.randn(4, 8, 10, 3), torch.randn(4, 8, 10, 9)  # outputs 4 x 1 and 4 x 4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, z = conv(narrow), conv(wide)
    assert y.dtype == torch.float32 and torch.allclose(y, plain(narrow), atol=1e-5)
    assert z.dtype == torch.bfloat16  # every other shape keeps bf16
    assert type(create_model("cls_inception_v3").net.Mixed_7a.branch3x3_2.conv).__name__ == "_NarrowSafeConv2d"


@pytest.mark.skipif(not __import__("spinebench.engine.device", fromlist=["x"]).cpu_has_bf16(),
                    reason="needs a CPU with native bf16")
def test_bf16_training_returns_fp32_validation_predictions(tiny_data):
    """Thresholds are chosen on train_model's best-epoch validation predictions without a second pass: under
    bf16-mixed they must be exactly what fp32 ``predict`` gives (bf16 moves probabilities by ~1e-3)."""
    from spinebench.engine import device as D
    from spinebench.engine.train import predict, transforms_for
    from spinebench.tasks import get_task

    tr, va = _tiny_sets(tiny_data)
    settings = TrainSettings(epochs=1, batch_size=8, lr=1e-3, image_size=(48, 48), val_every=0)
    try:
        D.set_precision("bf16-mixed")
        torch.manual_seed(0)
        model = create_model("cls_resnet50", pretrained="none")
        fit = train_model(model, tr, va, settings=settings, device=torch.device("cpu"), seed=0, progress=False)
        eval_va = va.with_transform(transforms_for(model, (48, 48), train=False))
        again = predict(model, eval_va, torch.device("cpu"), batch_size=8)
        fast = get_task(model).predict(model, eval_va, torch.device("cpu"), batch_size=8)  # in the run's bf16
    finally:
        D.set_precision("auto")
    assert fit["val_pred"] is not None
    np.testing.assert_array_equal(fit["val_pred"]["probs"], again["probs"])
    assert not np.array_equal(fast["probs"], again["probs"])  # bf16 predictions would not have passed


def test_a_body_pretrains_at_its_minimum_input_when_the_classifier_input_is_smaller(tiny_data):
    """Inception-ResNet-v2's body needs 75 px; the quick classifiers train at 128 x 56. The body's in-domain
    pre-training scales the classifier input up (aspect kept) instead of failing the detector (it did: the quick
    run lost the detector with "needs inputs of at least 75 x 75 pixels")."""
    from spinebench.engine.runner import RunContext, _transfer_into
    from spinebench.models.classifiers import fit_min_input
    from spinebench.models.transfer import IN_DOMAIN

    assert fit_min_input((128, 56), (75, 75)) == (171, 75) and fit_min_input((192, 80), (75, 75)) == (192, 80)
    assert fit_min_input((48, 48), (75, 75)) == (75, 75)  # the paper's size for Inception-v3, as before
    tr, va = _tiny_sets(tiny_data)
    name = "det_faster_rcnn_inception_resnet_v2"
    prof = replace(TINY, classifier=replace(TINY.classifier, image_size=(48, 21), max_steps_per_epoch=1),
                   transfer=(name,))
    ctx = RunContext(run_id="t", run_dir=Path("."), data=[tiny_data], profile=prof, device=torch.device("cpu"),
                     git_commit="", counts={}, pretrained="none")
    model = create_model(name, pretrained="none", **prof.detector_kwargs, **IN_DOMAIN[name].model_kwargs)
    seconds = _transfer_into(model, name, ctx, tr, va, replace(prof.detector, extra={"pretrain_s": 30}), 0)
    # cls_inception_v3, whose stem the plan starts the body from, was not trained in this run: said, not claimed
    assert seconds > 0 and model.pretrained_source == "in-domain:body:inception_resnet_v2"


def test_the_inception_resnet_v2_body_starts_from_the_runs_inception_v3_stem(tiny_data, monkeypatch):
    """With cls_inception_v3 trained earlier in the run, the detector's body is the pre-trained body classifier
    that started from its stem (the pre-training stubbed here: the stem reaches the detector as loaded), and the
    record says so; the run keeps cls_inception_v3's weights for it (a transfer source)."""
    from spinebench.engine import runner
    from spinebench.models.transfer import IN_DOMAIN, INCEPTION_V3_STEM_TO_IRV2

    name = "det_faster_rcnn_inception_resnet_v2"
    prof = replace(TINY, transfer=(name,))
    ctx = runner.RunContext(run_id="t", run_dir=Path("."), data=[tiny_data], profile=prof,
                            device=torch.device("cpu"), git_commit="", counts={}, pretrained="none")
    assert runner._transfer_sources(ctx) == {"cls_inception_v3"}
    torch.manual_seed(0)
    cls_state = create_model("cls_inception_v3", pretrained="none").state_dict()
    cls_state = {k: v + 0.5 if k.endswith("conv.weight") else v for k, v in cls_state.items()}  # "trained"
    ctx.trained["cls_inception_v3"] = cls_state
    pretrained_bodies, validated_on = [], []
    monkeypatch.setattr(runner, "train_model",
                        lambda body, tr, va, **k: pretrained_bodies.append(body) or validated_on.append(va))
    model = create_model(name, pretrained="none", **prof.detector_kwargs, **IN_DOMAIN[name].model_kwargs)
    tr, va = _tiny_sets(tiny_data)
    runner._transfer_into(model, name, ctx, tr, va, replace(prof.detector, extra={"pretrain_s": 30}), 0)
    assert len(pretrained_bodies) == 1
    assert validated_on == [va]      # TINY's classifiers validate every epoch: the best one is kept
    once = replace(prof, classifier=replace(prof.classifier, val_every=0))
    runner._transfer_into(create_model(name, pretrained="none", **prof.detector_kwargs,
                                       **IN_DOMAIN[name].model_kwargs),
                          name, replace(ctx, profile=once), tr, va, replace(prof.detector, extra={"pretrain_s": 30}), 0)
    assert validated_on[-1] is None  # quick's validate once, after the last epoch: that selects nothing
    assert model.pretrained_source == "in-domain:body:inception_resnet_v2+cls_inception_v3:stem"
    body = model.backbone.body.state_dict()
    for v3, irv2 in INCEPTION_V3_STEM_TO_IRV2.items():
        assert torch.equal(body[f"{irv2}.conv.weight"], cls_state[f"net.{v3}.conv.weight"])


@pytest.mark.parametrize("argv", [["run-all"], ["train", "cls_resnet50"], ["evaluate"], ["predict", "x.png"]])
def test_every_command_with_progress_bars_takes_quiet(argv):
    """Scripts and CI pass -q to whichever command they run (evaluate refused it once)."""
    from spinebench.cli import build_parser

    for flag in ("-q", "--quiet"):
        assert build_parser().parse_args([*argv, flag]).sub_quiet is True
    assert build_parser().parse_args(["-q", *argv]).quiet is True


def test_a_clock_budgeted_run_warns_on_a_cpu_without_bf16(monkeypatch):
    """quick on a CPU without bf16 units says its figures are the machine's; with them, on CUDA, or with no wall
    budget (paper), nothing is said."""
    from spinebench.engine import runner
    from spinebench.engine.profiles import get_profile

    quick, paper, cpu = get_profile("quick"), get_profile("paper"), torch.device("cpu")
    monkeypatch.setattr(runner, "cpu_has_bf16", lambda: False)
    note = runner.fp32_budget_note(quick, cpu)
    assert note and "fp32" in note and "quick" in note and "epochs" in note
    assert runner.fp32_budget_note(paper, cpu) is None  # no wall budget: nothing is cut
    assert runner.fp32_budget_note(quick, torch.device("cuda")) is None
    monkeypatch.setattr(runner, "cpu_has_bf16", lambda: True)
    assert runner.fp32_budget_note(quick, cpu) is None
