"""A new kind of model is one file: its task object, one model registration, and nothing else changed.

The toy task below (two findings from a linear model of an image's mean and brightest pixel) trains, is scored
and predicts through ``run-all``, ``evaluate`` and the demo's predictor, the same paths the paper's models take.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spinebench.data.transforms import ClassifierTransform
from spinebench.engine.train import TrainSettings
from spinebench.models import registry
from spinebench.tasks import TASKS, register_task
from spinebench.tasks.image_level import ImageLevelTask


class BrightnessTask(ImageLevelTask):
    """Toy task: the two findings' logits from an image's mean and maximum (hardware is bright)."""

    name = "toy_brightness"

    def settings(self, profile, name, n_train, image_size=None):
        return TrainSettings(epochs=3, batch_size=8, lr=0.05, patience=None, warmup_epochs=0)

    def transform(self, model, image_size, train):
        return ClassifierTransform((48, 24), train=False)

    def loss(self, net, batch, data, device, settings):
        return F.binary_cross_entropy_with_logits(net(batch["image"].to(device)), batch["labels"].to(device)), {}

    def _infer(self, model, batch, device):
        return torch.sigmoid(model(batch["image"].to(device)).float()).cpu().numpy(), None

    def infer(self, lm, view, scale, device, heatmaps):
        from spinebench.predict.predictor import decide

        with torch.inference_mode():
            p = torch.sigmoid(lm.model(lm.record.model_input(view)[None].to(device)))[0].cpu().numpy()
        return decide(p, lm.thresholds), {}

    def draw(self, view, result, extra):
        from spinebench.predict.drawing import gray_rgb

        return gray_rgb(view)


class Brightness(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x):
        return self.lin(torch.stack([x.mean((1, 2, 3)), x.amax((1, 2, 3))], 1))


def toy_brightness(pretrained: str = "none", **kwargs) -> nn.Module:
    return Brightness()


@pytest.fixture
def toy_registered(monkeypatch):
    """Register the task and the model for this test only (the registries are restored afterwards)."""
    monkeypatch.setitem(TASKS, BrightnessTask.name, BrightnessTask())
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    register_task(TASKS[BrightnessTask.name])
    registry.register_model(task=BrightnessTask.name, paper_name="", input_size=(48, 24),
                            card="toy: a linear model of mean and max")(toy_brightness)
    return "toy_brightness"


def test_a_new_task_trains_scores_and_predicts_through_every_path(toy_registered, tiny_data, tmp_path):
    from spinebench.engine.runner import evaluate, run_all
    from spinebench.evaluation.results import read_rows
    from spinebench.predict import Predictor

    name = toy_registered
    run_dir = run_all(data=[tiny_data], models=[name], device="cpu", out=tmp_path / "runs",
                      results=tmp_path / "results", weights_dir=tmp_path / "w", pretrained="none", progress=False,
                      report=False)
    row = read_rows(tmp_path / "results" / "leaderboard.csv")[0]
    assert row["status"] == "ok", row["error"]
    assert row["task"] == name and row["epochs"] == 3 and row["input_size"] == "48x24"
    assert 0 <= float(row["implant_auroc"]) <= 1 and math.isfinite(float(row["any_sensitivity"]))
    history = json.loads((run_dir / "metrics" / f"{name}-s0.json").read_text())["history"]
    assert len(history) == 3 and all(math.isfinite(h["val_loss"]) for h in history)

    ev = evaluate(weights_dir=tmp_path / "w", data=[tiny_data], split_file=str(run_dir / "split.csv"), n_boot=0,
                  progress=False)
    assert ev[0]["status"] == "ok" and ev[0]["implant_auroc"] == pytest.approx(float(row["implant_auroc"]))

    pred = Predictor(tmp_path / "w", optimize=False, lanes=1)
    analysis = pred.analyze(tiny_data.split("=", 1)[1] + "/img/x01.png")
    r = analysis.result["models"][name]
    assert r["task"] == name and 0 <= r["implant"]["probability"] <= 1
    assert analysis.images[name].dtype == np.uint8 and analysis.images[name].ndim == 3
