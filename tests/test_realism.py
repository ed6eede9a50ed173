"""The realism probe (spinebench.evaluation.realism): it must tell apart what differs and not what does not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spinebench.data import synth
from spinebench.data.sources import load_records
from spinebench.evaluation.realism import global_features, probe_inputs, realism_probe

ROOT = Path(__file__).resolve().parent.parent


def _films(root: Path, seed: int) -> list[dict]:
    synth.generate(root / f"s{seed}", n=48, seed=seed, workers=2, progress=False)
    return load_records(f"synth={root / f's{seed}'}")


@pytest.fixture(scope="module")
def films(tmp_path_factory) -> list[dict]:
    return _films(tmp_path_factory.mktemp("realism"), 5)


def test_probe_cannot_tell_a_source_from_itself_but_tells_a_different_one(films, tiny_data, tmp_path):
    # the same generator under another seed: nothing to find, the AUROC's CI spans 0.5
    other_seed = [dict(r, source="other") for r in _films(tmp_path, 6)]
    same = realism_probe(films, other_seed, probes=("hist",), size=(96, 40), n_boot=200, like_with_like=False)[0]
    assert same["auroc_lo"] <= 0.5 <= same["auroc_hi"], same
    # flat noise films with a bright bar (the tiny test folder) against the synthetic ones: trivially told apart
    other = realism_probe(films, load_records(tiny_data), probes=("hist", "cnn"), size=(96, 40), epochs=4,
                          n_boot=200, like_with_like=False)
    by = {r["probe"]: r for r in other}
    assert by["hist"]["auroc"] >= 0.95 and by["cnn"]["auroc"] >= 0.9, other
    assert by["hist"]["n_heldout_synthetic"] > 0 and by["hist"]["n_heldout_real"] > 0
    assert by["hist"]["n_train_synthetic"] + by["hist"]["n_heldout_synthetic"] == len(films)
    # like with like (the default): hardware-free scoliotic films only; the tiny folder's 'curves' count as such
    matched = realism_probe(films, load_records(tiny_data), probes=("hist",), size=(96, 40), n_boot=0)[0]
    n_matched = sum(1 for r in films if r["implant"] == 0 and r["scoliosis"] == 1)
    assert matched["n_train_synthetic"] + matched["n_heldout_synthetic"] == n_matched < len(films)
    with pytest.raises(ValueError, match="both sides"):
        realism_probe(films, [r for r in films if r["implant"] == 1], probes=("hist",))
    # the films as the quick Cobb model sees them (input_norm "local"): labelled, and still not a source apart from
    # itself
    normed = realism_probe(films, other_seed, probes=("hist",), size=(96, 40), n_boot=200, like_with_like=False,
                           input_norm="local")[0]
    assert normed["input_norm"] == "local" and same["input_norm"] == "none"
    assert normed["auroc_lo"] <= 0.5 <= normed["auroc_hi"], normed
    with pytest.raises(ValueError, match="unknown input_norm"):
        realism_probe(films, other_seed, probes=("hist",), size=(96, 40), like_with_like=False, input_norm="clahe")


def test_features_follow_the_film(films):
    x = probe_inputs(films[:2], (96, 40))
    assert x.shape == (2, 1, 96, 40) and 0 <= float(x.min()) and float(x.max()) <= 1
    f = global_features(x)
    darker = global_features(x * 0.5)
    assert f.shape[0] == 2 and np.isfinite(f).all()
    assert (darker[:, -3] < f[:, -3]).all()  # the mean brightness column moves with the film
    assert np.allclose(f[:, :32].sum(1), 1.0)  # the intensity histogram is a distribution


def test_bench_writes_rows_and_a_sheet(tmp_path, films, tiny_data):
    out, sheet = tmp_path / "realism.csv", tmp_path / "sheet.png"
    src = Path(films[0]["path"]).parents[1]
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_realism.py"), "--synthetic", f"synth={src}",
                        "--real", tiny_data, "--probes", "hist", "--size", "96", "40", "--out", str(out),
                        "--sheet", str(sheet)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = out.read_text().splitlines()
    assert rows[0].startswith("probe,auroc") and rows[1].startswith("hist,")
    im = Image.open(sheet)
    assert im.height > 2 * 420  # synthetic row above the real row
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_realism.py"), "--real",
                          f"folder={tmp_path / 'missing'}", "--probes", "hist"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 1 and "error:" in bad.stderr and "Traceback" not in bad.stderr
