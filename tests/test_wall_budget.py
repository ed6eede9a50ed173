"""The quick profile's wall budget: the models still to train share what is left of the run's time."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from spinebench.engine.profiles import budget_scale, budget_seconds, get_profile, scaled_settings, with_wall_budget
from spinebench.engine.train import TrainSettings


def test_budget_scale_shares_what_is_left():
    # 600 s, 300 in, 10 s tail, 3 models of 8 + 8 + 20 s overhead: 254 s for 400 s of budgets
    assert budget_scale(600, 300, [100, 100, 200], [8, 8, 20]) == pytest.approx(254 / 400)
    assert budget_scale(600, 10, [100, 100, 200], [8, 8, 8]) == 1.0   # ahead of time: nothing grows
    assert budget_scale(600, 590, [100, 100], [8, 8]) == 0.3          # far behind: the floor, not a starved model
    assert budget_scale(600, 590, [0.0], [8]) == 1.0                  # nothing on a clock to scale
    # a wall budget the user gives may also stretch them: 556 s for 400 s of budgets
    assert budget_scale(600, 10, [100, 100, 200], [8, 8, 8], ceiling=math.inf) == pytest.approx(556 / 400)


def test_wall_budget_expects_each_task_to_cost_what_its_own_models_cost():
    import time
    from types import SimpleNamespace

    from spinebench.engine.runner import _WallBudget

    quick = get_profile("quick")
    ctx = SimpleNamespace(profile=quick, counts={"train": 418}, budget_scale=1.0, settings=quick.settings_for)
    queue = [("cls_squeezenet1_1", 0), ("det_faster_rcnn_inception_v2", 0),
             ("det_faster_rcnn_inception_resnet_v2", 0), (quick.cobb_model, 0)]
    wall = _WallBudget(ctx, queue, time.perf_counter())
    # the priors: each task's, and Inception-ResNet-v2's pre-trained body adds its set-up and a slower detector
    assert [wall.overhead(j) for j in range(4)] == [8.0, 25.0, 40.0, 25.0]
    wall.before(0)
    wall.after(0, wall.given[0] + 4.0)                  # a classifier cost half its prior
    assert wall.overhead(0) == 4.0 and wall.overhead(1) == 25.0 and wall.overhead(3) == 25.0  # other tasks keep theirs
    wall.before(1)
    wall.after(1, wall.given[1] + 30.0)                 # the first detector cost 1.2 x its prior ...
    assert wall.overhead(2) == pytest.approx(48.0)      # ... so the second is expected to cost 1.2 x its own
    wall.before(2)
    wall.after(2, wall.given[2] + 36.0)                 # it cost 0.9 x: the detectors' mean ratio is now 1.05
    assert wall.overhead(1) == pytest.approx(25 * 1.05) and wall.overhead(3) == 25.0   # not the detectors' 33 s
    # a detector that stopped 40 s before its clock (its epoch cap) and then scored for 20 s cost 20 s beyond its
    # training, not 0 beyond its budget: its task's ratio counts the 20 s
    n_ratios = len(wall.ratios["detection"])
    wall.after(2, wall.given[2] - 20.0, wall.given[2] - 40.0)
    assert wall.ratios["detection"][-1] == pytest.approx(20.0 / wall.priors[2])
    wall.ratios["detection"] = wall.ratios["detection"][:n_ratios]
    # the last model, 500 s into the run: what is left after its own 25 s and the 10 s tail
    wall.t_start = time.perf_counter() - 500
    wall.before(3)
    cobb = wall.budgets[3]
    assert ctx.budget_scale == pytest.approx(min(1.0, (quick.wall_budget_s - 500 - 10 - 25) / cobb), abs=1e-3)


def test_scaled_settings_scale_training_and_pretraining_only_when_bounded():
    s = TrainSettings(epochs=5, time_budget_s=50, extra={"pretrain_s": 35, "input_norm": "local"})
    t = scaled_settings(s, 0.5)
    assert (t.time_budget_s, t.extra["pretrain_s"], t.extra["input_norm"], t.epochs) == (25, 17.5, "local", 5)
    assert s.extra["pretrain_s"] == 35                                 # the profile's own settings untouched
    assert scaled_settings(s, 1.0) is s
    assert scaled_settings(TrainSettings(epochs=5), 0.5).time_budget_s is None
    assert budget_seconds(s) == 85 and budget_seconds(TrainSettings(epochs=5)) == 0
    s = replace(s, checkpoint_every_s=60.0)
    u = scaled_settings(s, 2.5)                   # stretched: the epoch cap and checkpoint interval grow with it
    assert (u.time_budget_s, u.extra["pretrain_s"], u.epochs, u.checkpoint_every_s) == (125, 87.5, 13, 150)
    assert scaled_settings(s, 0.5).checkpoint_every_s == 60           # cut: checkpoints as before


def test_a_given_wall_budget_stretches_the_quick_budgets_and_is_refused_where_it_cannot_apply():
    import time
    from types import SimpleNamespace

    from spinebench.engine.runner import _WallBudget
    from spinebench.errors import SpinebenchError

    quick = get_profile("quick")
    long = with_wall_budget(quick, 1500)
    assert (long.wall_budget_s, long.scale_up, quick.scale_up, quick.wall_budget_s) == (1500, True, False, 570)
    names = ["cls_resnet50", "cls_densenet121", "cls_squeezenet1_1", "cls_inception_v3",
             "det_faster_rcnn_inception_v2", "det_faster_rcnn_inception_resnet_v2", quick.cobb_model]
    for prof, grows in ((quick, False), (long, True)):
        ctx = SimpleNamespace(profile=prof, counts={"train": 418}, budget_scale=1.0, settings=prof.settings_for)
        wall = _WallBudget(ctx, [(n, 0) for n in names], time.perf_counter() - 60)  # 60 s of data generation
        wall.before(0)
        assert (ctx.budget_scale > 2) if grows else (ctx.budget_scale <= 1.0)   # the profile's own only cuts
    for bad in (0, -5, float("nan"), float("inf")):
        with pytest.raises(SpinebenchError, match="--wall-budget must be a positive number of seconds"):
            with_wall_budget(quick, bad)
    with pytest.raises(SpinebenchError, match="paper profile trains by epochs"):
        with_wall_budget(get_profile("paper"), 1500)


def test_quick_profile_budgets_fit_its_wall_budget():
    quick = get_profile("quick")
    names = ["cls_resnet50", "cls_densenet121", "cls_squeezenet1_1", "cls_inception_v3",
             "det_faster_rcnn_inception_v2", "det_faster_rcnn_inception_resnet_v2", quick.cobb_model]
    total = sum(budget_seconds(quick.settings_for(n, 418)) for n in names)
    # what the budgets leave of the wall budget pays for data generation and ~8-15 s of scoring a model
    assert 400 < total < quick.wall_budget_s - 60


@pytest.mark.slow
def test_run_all_scales_a_late_model_and_leaves_a_given_budget_alone(tiny_data, tmp_path, caplog):
    from test_engine import TINY

    from spinebench.engine.runner import run_all

    prof = replace(TINY, classifier=replace(TINY.classifier, time_budget_s=40.0), wall_budget_s=20.0)
    kw = dict(data=[tiny_data], profile=prof, models=["cls_squeezenet1_1"], device="cpu", pretrained="none",
              progress=False, report=False)
    run = run_all(out=tmp_path / "a", results=tmp_path / "ra", weights_dir=tmp_path / "wa", **kw)
    settings = json.loads((run / "metrics" / "cls_squeezenet1_1-s0.json").read_text())["settings"]
    assert settings["time_budget_s"] == pytest.approx(12.0)           # 20 s cannot hold 40: the floor, 0.3 x 40
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "of its" in r.getMessage()]
    assert len(said) == 1 and "12 of its 40 s" in said[0]              # the user is told, once
    caplog.clear()
    run = run_all(out=tmp_path / "b", results=tmp_path / "rb", weights_dir=tmp_path / "wb",
                  overrides={"time_budget_s": 40.0}, **kw)
    settings = json.loads((run / "metrics" / "cls_squeezenet1_1-s0.json").read_text())["settings"]
    assert settings["time_budget_s"] == 40.0
    assert not [r for r in caplog.records if "of its" in r.getMessage()]


@pytest.mark.slow
def test_run_all_with_a_wall_budget_gives_a_model_more_time_and_more_epochs(tiny_data, tmp_path, capsys):
    from test_engine import TINY

    from spinebench.cli import main
    from spinebench.engine.runner import run_all

    prof = replace(TINY, classifier=replace(TINY.classifier, time_budget_s=1.0, epochs=2), wall_budget_s=20.0)
    run = run_all(data=[tiny_data], profile=prof, models=["cls_squeezenet1_1"], device="cpu", pretrained="none",
                  progress=False, report=False, out=tmp_path / "a", results=tmp_path / "ra",
                  weights_dir=tmp_path / "wa", wall_budget_s=32.0)
    settings = json.loads((run / "metrics" / "cls_squeezenet1_1-s0.json").read_text())["settings"]
    assert settings["time_budget_s"] > 3 and settings["epochs"] > 2   # stretched from 1 s and 2 epochs
    assert json.loads((run / "config.json").read_text())["wall_budget_s"] == 32.0
    # the CLI: one line, nothing written, where the flag cannot apply
    for args in (["--wall-budget", "0"], ["--wall-budget", "600", "--time-budget", "50"],
                 ["--wall-budget", "600", "--profile", "paper"]):
        rc = main(["-q", "run-all", "--data", tiny_data, "--models", "cls_squeezenet1_1", *args,
                   "--out", str(tmp_path / "runs"), "--no-report"])
        err = capsys.readouterr().err
        assert rc == 2 and "--wall-budget" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()
