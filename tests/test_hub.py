"""Weights on the Hugging Face Hub both ways, offline: the upload folder ``weights push`` builds, and loading it back
through a Hugging Face cache laid out here (``HF_HUB_OFFLINE=1``: real ``huggingface_hub`` code resolves it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from spinebench.errors import SpinebenchError

pytest.importorskip("huggingface_hub")
pytest.importorskip("safetensors")

REPO = "someone/spinebench-weights"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
METRICS = {"any_sensitivity": 0.8, "any_sensitivity_lo": 0.7, "any_sensitivity_hi": 0.9, "loss": 0.4,
           "implant_auroc": 0.91, "scoliosis_auroc": 0.77}


def make_weights(out: Path) -> Path:
    """Two tiny trained-weights records: one written by the record's own writer, one legacy entry (cobb_train's
    keys: data as a list, test_metrics, max_side, no schema)."""
    from spinebench.engine.weights import save_weights
    from spinebench.models import create_model

    torch.manual_seed(0)
    save_weights(create_model("cls_squeezenet1_1", pretrained="none"), out, meta={
        "task": "classification", "thresholds": [0.4, 0.6], "image_size": [64, 64], "run_id": "r-quick",
        "data": "synth", "seed": 0, "pretrained": False, "metrics": METRICS})
    save_weights(create_model("cls_densenet121", pretrained="none"), out, meta={
        "data": ["synth", "aasce=/private/x"], "test_metrics": {"accuracy": 0.5, "grade_confusion": [[1]]},
        "max_side": 256, "thresholds": [0.5, 0.5], "image_size": [64, 64], "pretrained": "imagenet"})
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def upload(weights, tmp_path_factory) -> Path:
    from spinebench.cli import main

    out = tmp_path_factory.mktemp("upload")
    board = tmp_path_factory.mktemp("results") / "leaderboard.csv"
    board.write_text("model,accuracy\ncls_squeezenet1_1,0.5\n")
    assert main(["weights", "push", str(weights), "--repo", REPO, "--dry-run", "--out", str(out),
                 "--leaderboard", str(board)]) == 0
    return out


@pytest.fixture
def hf_cache(upload, tmp_path, monkeypatch) -> Path:
    """A Hugging Face cache holding ``upload`` as commit COMMIT of REPO, with refs ``main`` and ``v1``."""
    import huggingface_hub.constants as hf_constants

    cache = tmp_path / "hf" / "hub"
    repo_dir = cache / ("models--" + REPO.replace("/", "--"))
    shutil.copytree(upload, repo_dir / "snapshots" / COMMIT)
    (repo_dir / "refs").mkdir(parents=True)
    for ref in ("main", "v1"):
        (repo_dir / "refs" / ref).write_text(COMMIT)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads its environment once, at import (gradio imported it already): the same settings
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return cache


def test_push_folder_has_safetensors_manifest_and_card(weights, upload):
    from safetensors.torch import load_file

    from spinebench.weights import SCHEMA_VERSION, read_records, sha256_file

    files = sorted(p.name for p in upload.iterdir())
    assert files == ["README.md", "cls_densenet121.safetensors", "cls_squeezenet1_1.safetensors", "leaderboard.csv",
                     "manifest.json"]
    local, hub = read_records(weights), read_records(upload)
    for name, rec in hub.items():
        assert rec.file == f"{name}.safetensors" and rec.sha256 == sha256_file(upload / rec.file)
        assert rec.schema == SCHEMA_VERSION
        tensors = load_file(str(upload / rec.file))
        for k, v in local[name].state_dict().items():
            assert torch.equal(tensors[k], v), k
        assert rec.thresholds == local[name].thresholds and rec.cache_side == local[name].cache_side
    card = (upload / "README.md").read_text()
    front = card.split("---")[1]
    assert "model-index" in front and "license: apache-2.0" in front
    for rec in hub.values():  # every metric of the manifest is named in the card's model-index
        for k in rec.metrics:
            assert f"type: {k}" in front, k
    for text in ("Not a medical device", "Intended use", "synthetic", "imagenet", "no (random init)"):
        assert text in card, text
    assert "/private/x" not in card


def test_legacy_entry_is_read_through_the_adapter(weights):
    from spinebench.weights import read_records

    legacy = read_records(weights)["cls_densenet121"]
    assert legacy.data == "synth aasce=/private/x" and legacy.data_kind == "synthetic + real"
    assert legacy.cache_side == 256 and legacy.metrics == {"accuracy": 0.5} and legacy.pretrained == "imagenet"
    assert legacy.task == "classification"


def test_load_trained_from_folder_and_offline_hub_cache_agree(weights, hf_cache):
    import spinebench as sb
    from spinebench.io import load_image

    img, _ = load_image(Path(sb.__file__).parent / "assets" / "examples" / "02_scoliosis.jpg")
    outs = {}
    for src in (str(weights), f"hf://{REPO}@v1", f"hf://{REPO}", f"hf://{REPO}@{COMMIT}"):
        model, rec = sb.load_trained("cls_squeezenet1_1", weights=src)
        assert not model.training and rec.thresholds == [0.4, 0.6]
        with torch.inference_mode():
            outs[src] = torch.sigmoid(model(rec.preprocess(img)[None])).numpy()
    hub_rec = sb.load_trained("cls_squeezenet1_1", weights=f"hf://{REPO}@v1")[1]
    assert hub_rec.path.suffix == ".safetensors" and str(hf_cache) in str(hub_rec.path)
    ref = outs[str(weights)]
    for src, out in outs.items():
        np.testing.assert_array_equal(out, ref, err_msg=src)


def test_predictor_and_demo_read_the_hub(weights, hf_cache, monkeypatch, tmp_path):
    from spinebench import predict as sp
    from spinebench.predict import Predictor

    monkeypatch.setenv(sp.WEIGHTS_REPO_ENV, REPO)
    monkeypatch.setenv(sp.WEIGHTS_REVISION_ENV, "v1")
    found = sp.find_weights(tmp_path / "no-local-weights")  # what the demo's main() does first
    assert found is not None and (found / "manifest.json").is_file() and str(hf_cache) in str(found)
    example = str(Path(sp.__file__).parent.parent / "assets" / "examples" / "03_implant.jpg")
    hub = Predictor(f"hf://{REPO}@v1", heatmaps=False, optimize=False, lanes=1)
    assert hub.weights_dir == found
    a = hub.analyze(example, draw=False).result
    b = Predictor(weights, heatmaps=False, optimize=False, lanes=1).analyze(example, draw=False).result
    for name in b["models"]:
        for f in ("implant", "scoliosis"):
            assert a["models"][name][f] == b["models"][name][f]


def test_bad_hub_input_is_one_clear_error(weights, hf_cache, tmp_path):
    import spinebench as sb
    from spinebench.weights import read_records, write_record

    for bad, msg in [("hf://no-slash", "bad Hub weights"), ("hf://a/b@", "bad Hub weights"),
                     (f"hf://{REPO}@nope", "cannot get weights"), ("hf://other/repo", "cannot get weights"),
                     (str(tmp_path / "missing"), "does not exist")]:
        with pytest.raises(SpinebenchError, match=msg) as e:
            sb.load_trained("cls_squeezenet1_1", weights=bad)
        assert "\n" not in str(e.value)
    with pytest.raises(SpinebenchError, match="no trained weights for cls_resnet50"):
        sb.load_trained("cls_resnet50", weights=str(weights))
    changed = tmp_path / "changed"
    shutil.copytree(weights, changed)
    rec = read_records(changed)["cls_squeezenet1_1"]
    rec.sha256 = "0" * 64
    write_record(changed, rec)
    with pytest.raises(SpinebenchError, match="does not match its sha256"):
        sb.load_trained("cls_squeezenet1_1", weights=str(changed))
    assert json.loads((changed / "manifest.json").read_text())["cls_densenet121"]["schema"] == 2


def test_weights_cli_errors_are_one_line(tmp_path, weights):
    import os
    import subprocess
    import sys

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), HF_TOKEN="hf_not_a_token")
    for args, msg in [(["push", str(tmp_path / "none"), "--repo", REPO, "--dry-run", "--out", str(tmp_path / "o")],
                       "no trained weights"),
                      (["push", str(weights), "--repo", "not/a/repo", "--dry-run", "--out", str(tmp_path / "o")],
                       "bad Hub weights"),
                      (["push", str(weights), "--repo", REPO, "--dry-run"], "needs --out"),
                      (["push", str(weights), "--repo", REPO], "cannot push to")]:  # offline: no upload possible
        r = subprocess.run([sys.executable, "-m", "spinebench", "weights", *args], capture_output=True, text=True,
                           env=env)
        assert r.returncode == 2 and msg in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)


def test_an_old_manifest_file_loads(weights, tmp_path):
    """A manifest written before the record (no schema; cobb_train's and runner's old keys) is read as is."""
    import spinebench as sb
    from spinebench.weights import read_records, sha256_file

    old = tmp_path / "old"
    old.mkdir()
    shutil.copy(weights / "cls_squeezenet1_1.pt", old)
    (old / "manifest.json").write_text(json.dumps({"cls_squeezenet1_1": {
        "file": "cls_squeezenet1_1.pt", "sha256": sha256_file(old / "cls_squeezenet1_1.pt"),
        "data": ["synth"], "test_metrics": {"smape": 12.5}, "max_side": 512, "thresholds": [0.3, 0.7],
        "image_size": [64, 64], "pretrained": True, "best_epoch": 3, "saved": "2025-01-01T00:00:00+00:00"}}))
    rec = read_records(old)["cls_squeezenet1_1"]
    assert (rec.cache_side, rec.data, rec.metrics, rec.pretrained) == (512, "synth", {"smape": 12.5}, True)
    assert rec.extra == {"best_epoch": 3} and rec.task == "classification"
    model, rec = sb.load_trained("cls_squeezenet1_1", weights=old)
    assert model.pretrained_loaded is True and rec.decision_thresholds() == (0.3, 0.7)


def test_a_model_this_version_does_not_know_is_skipped(weights, tmp_path):
    from spinebench.predict import Predictor
    from spinebench.weights import read_records

    mixed = tmp_path / "mixed"
    shutil.copytree(weights, mixed)
    manifest = json.loads((mixed / "manifest.json").read_text())
    manifest["cls_from_the_future"] = dict(manifest["cls_squeezenet1_1"], model="cls_from_the_future", task=None)
    (mixed / "manifest.json").write_text(json.dumps(manifest))
    assert read_records(mixed)["cls_from_the_future"].task == "unknown"
    pred = Predictor(mixed, heatmaps=False, optimize=False, lanes=1)
    assert "cls_from_the_future" in pred.skipped and "cls_squeezenet1_1" in pred.models
