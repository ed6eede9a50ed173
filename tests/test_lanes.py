"""run-all in lanes (``spinebench.engine.lanes``): several run_all processes at once, merged into one run folder
with one leaderboard and one weights folder; the plan keeps an in-domain detector behind its source classifier."""

from __future__ import annotations

import json

import pytest

from spinebench.engine.lanes import plan_lanes


def test_plan_keeps_a_transfer_target_behind_its_source_and_balances_the_rest():
    models = ["cls_resnet50", "cls_densenet121", "cls_squeezenet1_1", "cls_inception_v3",
              "det_faster_rcnn_inception_v2", "det_faster_rcnn_inception_resnet_v2", "cobb_vertebra_resnet34"]
    plan = plan_lanes(models, 3, {"det_faster_rcnn_inception_v2": "cls_inception_v3"})
    assert sorted(m for lane in plan for m in lane) == sorted(models) and len(plan) == 3
    lane = next(lane for lane in plan if "cls_inception_v3" in lane)
    assert lane.index("det_faster_rcnn_inception_v2") == lane.index("cls_inception_v3") + 1
    assert max(map(len, plan)) - min(map(len, plan)) <= 1
    assert plan_lanes(["a", "b"], 5) == [["a"], ["b"]] and plan_lanes(["a", "b"], 1) == [["a", "b"]]
    # a target whose source is not in the run is a lane of its own
    assert plan_lanes(["det_faster_rcnn_inception_v2"], 2, {"det_faster_rcnn_inception_v2": "cls_inception_v3"}) \
        == [["det_faster_rcnn_inception_v2"]]


@pytest.mark.slow
def test_run_all_in_two_lanes_gives_one_run_folder_leaderboard_and_weights(tiny_data, tmp_path):
    from test_engine import TINY

    from spinebench.engine.runner import run_all
    from spinebench.evaluation.results import read_rows
    from spinebench.weights import trained_records

    models = ["cls_squeezenet1_1", "det_faster_rcnn_inception_v2"]
    run_dir = run_all(data=[tiny_data], profile=TINY, models=models, device="cpu", out=tmp_path / "runs",
                      results=tmp_path / "results", weights_dir=tmp_path / "weights", pretrained="none",
                      progress=False, report=False, lanes=2)
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["models"] == models and sorted(map(tuple, cfg["lanes"])) == [(m,) for m in sorted(models)]
    rows = read_rows(run_dir / "leaderboard.csv")
    assert [r["model"] for r in rows] == models and all(r["status"] == "ok" for r in rows)
    assert [r["model"] for r in read_rows(tmp_path / "results" / "leaderboard.csv")] == models
    assert sorted(p.name for p in (run_dir / "metrics").iterdir()) == [f"{m}-s0.json" for m in sorted(models)]
    assert all(r["split_file"].endswith("split.csv") for r in rows)
    lane_splits = {p.read_bytes() for p in (run_dir / "lanes").glob("*/runs/*/split.csv")}
    assert lane_splits == {(run_dir / "split.csv").read_bytes()}   # every lane trained on the parent's split
    recs = trained_records(tmp_path / "weights")
    assert sorted(recs) == sorted(models) and all(r.state_dict() for r in recs.values())
    summary = json.loads((run_dir / "run_summary.json").read_text())
    assert summary["lanes"] == 2 and summary["bytes_written"] > 0


def test_run_all_refuses_fewer_than_one_lane(tiny_data, tmp_path):
    from spinebench.engine.runner import run_all
    from spinebench.errors import SpinebenchError

    with pytest.raises(SpinebenchError, match="--lanes must be at least 1"):
        run_all(data=[tiny_data], models=["cls_squeezenet1_1"], device="cpu", out=tmp_path / "r", lanes=0,
                progress=False, report=False)
    assert not (tmp_path / "r").exists()
