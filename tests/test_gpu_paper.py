"""benchmarks/gpu_paper.py's timing table on a small run folder laid out here (real per-epoch log rows, file times
set by hand): images/s from the logs, model windows from the file times, GPU samples averaged inside them."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gpu_paper():
    spec = importlib.util.spec_from_file_location("gpu_paper", ROOT / "benchmarks" / "gpu_paper.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
