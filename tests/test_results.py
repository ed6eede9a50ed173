"""The result-row schema, the leaderboard files, and the paper's numbers as data."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from spinebench.errors import SpinebenchError
from spinebench.evaluation.detection import DETECTION_KEYS
from spinebench.evaluation.metrics import IMAGE_LEVEL_KEYS, evaluate_image_level
from spinebench.evaluation.results import (COBB_KEYS, RESULT_COLUMNS, append_rows, error_row, git_commit, make_row,
                                           read_rows, write_json)
from spinebench.paper import PAPER_DATA, PAPER_RESULTS, PAPER_TOTAL_IMAGES, paper_row


def _metrics() -> dict:
    y = np.array([[1, 0], [0, 1], [0, 0], [1, 1]])
    p = np.array([[0.9, 0.2], [0.3, 0.7], [0.1, 0.1], [0.6, 0.4]])
    return evaluate_image_level(y, p, ["a", "b", "c", "d"], [0.5, 0.5], n_boot=50)


def test_columns_cover_every_metric_once():
    assert len(set(RESULT_COLUMNS)) == len(RESULT_COLUMNS)
    assert RESULT_COLUMNS[:3] == ("run_id", "timestamp", "model")
    for key in (*IMAGE_LEVEL_KEYS, *DETECTION_KEYS, *COBB_KEYS, "status", "error", "pretrained", "git_commit"):
        assert key in RESULT_COLUMNS
    for key in ("smape_lo", "mae_tl_hi", "any_sensitivity_lo", "map_Lum", "ap50_sco"):
        assert key in RESULT_COLUMNS


def test_make_row_fills_and_refuses_unknown():
    row = make_row(model="cls_resnet50", status="ok", seed=np.int64(3), **_metrics())
    assert tuple(row) == RESULT_COLUMNS
    assert row["map"] == "" and row["smape"] == ""  # classifier: detection and Cobb columns empty
    assert row["seed"] == 3 and type(row["seed"]) is int  # numpy scalars become plain numbers
    assert row["timestamp"]
    with pytest.raises(KeyError, match="sensitivty"):
        make_row(model="x", implant_sensitivty=0.5)


def test_error_row():
    try:
        raise RuntimeError("loss is nan\nat step 3")
    except RuntimeError as e:
        row = error_row("cls_densenet121", e, run_id="r1", seed=0, task="classification")
    assert row["status"] == "error" and row["model"] == "cls_densenet121" and row["run_id"] == "r1"
    assert row["error"] == "RuntimeError: loss is nan at step 3"  # one line
    assert row["accuracy"] == ""


def test_append_and_read_roundtrip(tmp_path):
    path = tmp_path / "results" / "leaderboard.csv"
    m = _metrics()
    m["scoliosis_auroc"] = math.nan  # undefined metrics survive the round trip as NaN, not as ""
    append_rows(path, [make_row(model="cls_resnet50", status="ok", pretrained=True, git_commit="1234567",
                                seed=0, **m)])
    append_rows(path, [error_row("det_faster_rcnn_inception_v2", ValueError("boom"))])
    rows = read_rows(path)
    assert [r["model"] for r in rows] == ["cls_resnet50", "det_faster_rcnn_inception_v2"]
    r = rows[0]
    assert r["pretrained"] is True and r["seed"] == 0
    assert r["git_commit"] == "1234567"  # text column: an all-digit hash stays a string
    assert r["implant_sensitivity"] == pytest.approx(m["implant_sensitivity"])
    assert r["any_n_pos"] == 3 and isinstance(r["any_n_pos"], int)
    assert r["map"] == ""  # not recorded
    assert math.isnan(r["scoliosis_auroc"])
    assert rows[1]["status"] == "error" and rows[1]["error"] == "ValueError: boom"
    with open(path, newline="") as f:
        assert tuple(next(csv.reader(f))) == RESULT_COLUMNS
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]  # no temp files left


def test_append_with_changed_header_keeps_old_file(tmp_path, caplog):
    path = tmp_path / "leaderboard.csv"
    old = "model,accuracy\ncls_resnet50,0.825\n"
    path.write_text(old)
    with caplog.at_level("WARNING"):
        append_rows(path, [make_row(model="cls_densenet121", status="ok")])
    baks = list(tmp_path.glob("leaderboard.csv.*.bak"))
    assert len(baks) == 1 and baks[0].read_text() == old
    assert "different header" in caplog.text
    rows = read_rows(path)
    assert [r["model"] for r in rows] == ["cls_densenet121"]
    # a second change the same second must not overwrite the first backup
    path.write_text("model\nx\n")
    append_rows(path, [make_row(model="y")])
    assert len(list(tmp_path.glob("leaderboard.csv.*.bak"))) == 2


def test_read_rows_missing_file(tmp_path):
    with pytest.raises(SpinebenchError, match="not found"):
        read_rows(tmp_path / "nope.csv")


def test_write_json_atomic_and_numpy(tmp_path):
    path = tmp_path / "a" / "m.json"
    write_json(path, {"x": np.float32(0.5), "t": np.array([0.5, 0.25]), "p": tmp_path})
    assert json.loads(path.read_text()) == {"x": 0.5, "t": [0.5, 0.25], "p": str(tmp_path)}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_git_commit(monkeypatch):
    commit = git_commit()
    assert commit == "unknown" or (4 <= len(commit) <= 40 and all(c in "0123456789abcdef" for c in commit))
    monkeypatch.setenv("PATH", "/nonexistent")  # no git at all: no crash
    assert git_commit() == "unknown"


def test_paper_numbers():
    assert len(PAPER_RESULTS) == 6 and PAPER_TOTAL_IMAGES == 598
    assert sum(d["train"] for d in PAPER_DATA) == 418
    dense = paper_row("cls_densenet121")
    assert (dense["paper_name"], dense["accuracy"], dense["sensitivity"], dense["specificity"]) == \
        ("DenseNet", 0.935, 0.97, 0.98)
    det = paper_row("det_faster_rcnn_inception_resnet_v2")
    assert det["table"] == 5 and det["accuracy"] is None and det["loss"] == 1.465
    assert paper_row("cls_unknown") is None
    dense["accuracy"] = 0.0  # a copy: the package data is not changed
    assert paper_row("cls_densenet121")["accuracy"] == 0.935
    for r in PAPER_RESULTS:
        assert r["approach"] in ("detection api", "transfer learning")
        assert 0 < r["sensitivity"] <= 1 and 0 < r["specificity"] <= 1
        make_row(model=r["model"], paper_name=r["paper_name"])  # paper rows fit the schema's keys


def test_append_csv_row_adds_the_columns_a_later_row_brings(tmp_path):
    """A training log validated only after its last epoch (quick profile, val_every=0): the last row's
    validation columns are added to the header, every value stays under its own name."""
    from spinebench.evaluation.results import append_csv_row

    path = tmp_path / "log.csv"
    append_csv_row(path, {"epoch": 1, "train_loss": 0.9, "val_loss": math.nan, "lr": 1e-3, "seconds": 7.5})
    append_csv_row(path, {"epoch": 2, "train_loss": 0.8, "val_loss": 0.4, "val_auroc_implant": 0.97,
                          "val_auroc_scoliosis": 0.81, "lr": 0.0, "seconds": 9.2})
    append_csv_row(path, {"seconds": 3.0, "epoch": 3, "train_loss": 0.7, "val_loss": math.nan, "lr": 0.0})
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and all(None not in r for r in rows)
    assert rows[1]["lr"] == "0.0" and rows[1]["seconds"] == "9.2" and rows[1]["val_auroc_scoliosis"] == "0.81"
    assert rows[0]["val_auroc_implant"] == "" and rows[2]["seconds"] == "3.0" and rows[0]["lr"] == "0.001"


def test_append_csv_row_with_columns_extends_an_older_header(tmp_path):
    """A benchmark that gained columns since its CSV was written (``columns`` given): the header grows by the
    columns the row fills, the file's order is kept, and no value lands under another name."""
    from spinebench.evaluation.results import append_csv_row

    path = tmp_path / "bench.csv"
    append_csv_row(path, {"recipe": "a", "steps": 10, "ap": 0.2}, ["recipe", "steps", "ap"])
    append_csv_row(path, {"steps": 20, "recipe": "b", "ap": 0.3, "holdout_ap": 0.25},
                   ["recipe", "steps", "ap", "holdout_ap", "note"])
    append_csv_row(path, {"recipe": "c", "status": "error"}, ["recipe", "steps", "ap", "holdout_ap", "status"])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
        f.seek(0)
        header = next(csv.reader(f))
    assert header == ["recipe", "steps", "ap", "holdout_ap", "status"]
    assert all(None not in r for r in rows)
    assert (rows[0]["holdout_ap"], rows[1]["steps"], rows[1]["holdout_ap"]) == ("", "20", "0.25")
    assert (rows[2]["recipe"], rows[2]["status"], rows[2]["ap"]) == ("c", "error", "")
