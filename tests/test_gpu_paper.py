"""benchmarks/gpu_paper.py's timing table on a small run folder laid out here (real per-epoch log rows, file times
set by hand): images/s from the logs, model windows from the file times, GPU samples averaged inside them."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def gpu_paper():
    return load_benchmark("gpu_paper")


# two epochs of a real squeezenet log and one of a real detector log (quick profile, 2-core CPU)
CLS_LOG = """epoch,images,train_loss,val_loss,val_auroc_implant,val_auroc_scoliosis,lr,seconds
1,192,0.6112681031227112,0.6289560857123742,0.6634285714285715,0.45318352059925093,0.0,2.0914716340000723
2,192,0.5813,0.6020,0.70,0.50,0.0,1.9085283659999277
"""
DET_LOG = """epoch,images,train_loss,val_loss,val_auroc_implant,val_auroc_scoliosis,lr,seconds
1,20,1.0013291835784912,4.2620425862293825,0.578,0.3033707865168539,0.0,23.181297909000023
"""
T0 = 1_700_000_000.0


def _run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "metrics").mkdir()
    models = ["cls_squeezenet1_1", "det_faster_rcnn_inception_v2", "cobb_vertebra_resnet34"]
    (run / "config.json").write_text(json.dumps({"models": models, "seeds": [0]}))
    # squeezenet: epochs T0..T0+4, metrics written at T0+6; the detector: its one epoch ends at T0+31.2, then the
    # wall limit stopped it (no metrics); the Cobb model never started
    files = {"logs/cls_squeezenet1_1-s0.csv": (CLS_LOG, T0 + 4.0),
             "metrics/cls_squeezenet1_1-s0.json": (json.dumps({"row": {"task": "classification", "status": "ok",
                                                                       "train_seconds": 4.0},
                                                               "cuda_peak_allocated_mb": 812.5}), T0 + 6.0),
             "logs/det_faster_rcnn_inception_v2-s0.csv": (DET_LOG, T0 + 31.2)}
    for rel, (text, mtime) in files.items():
        (run / rel).write_text(text)
        os.utime(run / rel, (mtime, mtime))
    return run


def test_timing_rows(gpu_paper, tmp_path):
    run = _run_folder(tmp_path)
    # (time, util %, memory MB) every 0.5 s; utilisation 90 during squeezenet's window, 40 after it
    samples = [(T0 - 1 + 0.5 * i, 90.0 if T0 - 1 + 0.5 * i <= T0 + 6 else 40.0, 1000.0 + i) for i in range(80)]
    rows = {r["model"]: r for r in gpu_paper.timing_rows(run, samples, stopped_at=T0 + 34.0)}

    cls = rows["cls_squeezenet1_1"]
    assert cls["status"] == "ok" and cls["epochs"] == 2 and cls["images"] == 384
    assert cls["images_per_s"] == pytest.approx(384 / 4.0, abs=0.1)
    assert cls["wall_seconds"] == pytest.approx(6.0, abs=0.01)         # first epoch's start to metrics written
    assert cls["gpu_samples"] == 13 and cls["gpu_util_mean"] == 90.0 and cls["gpu_util_max"] == 90.0
    assert cls["gpu_mem_used_max_mb"] == 1014.0 and cls["cuda_peak_allocated_mb"] == 812.5

    det = rows["det_faster_rcnn_inception_v2"]
    assert det["status"] == "unfinished" and "wall limit" in det["note"]
    assert det["images_per_s"] == pytest.approx(20 / 23.18, abs=0.05)
    # its window: its first epoch's start (T0 + 31.2 - 23.18) to the stop; none of squeezenet's samples
    assert det["gpu_samples"] == 52 and det["gpu_util_mean"] == 40.0 and det["gpu_util_max"] == 40.0
    assert det["wall_seconds"] == pytest.approx(34.0 - 8.02, abs=0.06)  # rounded to 0.1 s
    assert rows["cobb_vertebra_resnet34"]["status"] == "not started"

    path = tmp_path / "gpu_timing.csv"
    gpu_paper.write_csv(path, list(rows.values()), gpu_paper.TIMING_COLUMNS)
    with open(path, newline="") as f:
        back = list(csv.DictReader(f))
    assert list(back[0]) == gpu_paper.TIMING_COLUMNS and len(back) == 3


def test_timing_rows_stopped_before_an_epoch(gpu_paper, tmp_path):
    run = _run_folder(tmp_path)
    (run / "logs" / "det_faster_rcnn_inception_v2-s0.csv").unlink()   # stopped inside the detector's first epoch
    rows = {r["model"]: r for r in gpu_paper.timing_rows(run, [], stopped_at=T0 + 34.0)}
    det = rows["det_faster_rcnn_inception_v2"]
    assert det["status"] == "unfinished" and det["epochs"] == 0 and det["images_per_s"] == ""
    assert det["wall_seconds"] == pytest.approx(28.0, abs=0.01)   # from squeezenet's metrics to the stop
    assert rows["cobb_vertebra_resnet34"]["status"] == "not started"


def test_timing_rows_without_nvidia_smi(gpu_paper, tmp_path):
    rows = gpu_paper.timing_rows(_run_folder(tmp_path), None)
    assert all("no nvidia-smi" in r["note"] for r in rows if r["status"] != "not started")
    assert "gpu_util_mean" not in rows[0] and not math.isnan(rows[0]["images_per_s"])


def _lane(work: Path, i: int, model: str, split: str, t: float) -> Path:
    """A lane's run folder and weights as run-all writes them (a metrics row, a log, a saved record)."""
    import torch

    from spinebench.weights import TrainedWeights

    run = work / "lanes" / str(i) / "runs" / f"20260101-00000{i}-paper"
    (run / "logs").mkdir(parents=True)
    (run / "metrics").mkdir()
    (run / "config.json").write_text(json.dumps({"run_id": run.name, "models": [model], "seeds": [0],
                                                 "profile": "paper", "overrides": {"time_budget_s": 85.0}}))
    (run / "split.csv").write_text(split)
    (run / "logs" / f"{model}-s0.csv").write_text(CLS_LOG)
    (run / "metrics" / f"{model}-s0.json").write_text(json.dumps({"row": {"model": model, "status": "ok",
                                                                          "implant_auroc": 0.9}}))
    (run / "run_summary.json").write_text(json.dumps({"wall_seconds": t, "bytes_written": 10, "peak_rss_mb": t}))
    TrainedWeights(model=model, task="classification").save(torch.nn.Linear(2, 2), work / "lanes" / str(i) / "weights")
    return run


def test_merge_lanes_makes_one_run_folder_and_one_weights_folder(gpu_paper, tmp_path):
    from spinebench.evaluation.results import read_rows
    from spinebench.weights import trained_records

    split = "image_id,patient_id,split\na,p1,train\nb,p2,test\n"
    lanes = [_lane(tmp_path, 0, "cls_resnet50", split, 50.0), None,   # lane 1 wrote nothing (stopped early)
             _lane(tmp_path, 2, "cls_squeezenet1_1", split, 80.0)]
    notes: list[str] = []
    merged = gpu_paper.merge_lane_runs(lanes, tmp_path / "merged", tmp_path / "weights", notes)

    cfg = json.loads((merged / "config.json").read_text())
    assert cfg["models"] == ["cls_resnet50", "cls_squeezenet1_1"] and cfg["lanes"] == [["cls_resnet50"],
                                                                                       ["cls_squeezenet1_1"]]
    assert (merged / "split.csv").read_text() == split and notes == []
    assert [r["model"] for r in read_rows(merged / "leaderboard.csv")] == ["cls_resnet50", "cls_squeezenet1_1"]
    assert sorted(p.name for p in (merged / "logs").iterdir()) == ["cls_resnet50-s0.csv", "cls_squeezenet1_1-s0.csv"]
    summary = json.loads((merged / "run_summary.json").read_text())
    assert summary["wall_seconds"] == 80.0 and summary["bytes_written"] == 20 and summary["lanes_finished"] == 2
    recs = trained_records(tmp_path / "weights")   # both lanes' weights, sha256 intact, one manifest
    assert sorted(recs) == ["cls_resnet50", "cls_squeezenet1_1"]
    assert all(r.state_dict() for r in recs.values())


def test_merge_lanes_notes_lanes_that_split_differently(gpu_paper, tmp_path):
    lanes = [_lane(tmp_path, 0, "cls_resnet50", "image_id,patient_id,split\na,p1,train\n", 1.0),
             _lane(tmp_path, 1, "cls_squeezenet1_1", "image_id,patient_id,split\na,p1,test\n", 1.0)]
    notes: list[str] = []
    gpu_paper.merge_lane_runs(lanes, tmp_path / "merged", tmp_path / "weights", notes)
    assert len(notes) == 1 and "split files differ" in notes[0]
    with pytest.raises(RuntimeError, match="no lane"):
        gpu_paper.merge_lane_runs([None, None], tmp_path / "m2", tmp_path / "w2", notes)
