"""benchmarks/bench_implant_ceiling.py: the small implant-only CNN that measures what the classifiers' input allows."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import load_benchmark


@pytest.fixture(scope="module")
def ic():
    return load_benchmark("bench_implant_ceiling")


def test_one_implant_logit_per_film_pooled_from_cells_of_4_x_4_pixels(ic):
    net = ic.MetalNet(width=4).eval()
    with torch.no_grad():
        cells = net(torch.rand(3, 1, 128, 56))
    assert cells.shape == (3, 1, 32, 14)
    # log-sum-exp pooling of an even map is that value; one hot cell lifts the film's logit above the mean
    even = torch.full((2, 1, 32, 14), -1.5)
    torch.testing.assert_close(ic._lse(even), torch.full((2,), -1.5))
    hot = even.clone()
    hot[1, 0, 20, 7] = 6.0
    pooled = ic._lse(hot)
    assert pooled[1] > pooled[0] and pooled[1] > hot[1].mean()


def test_it_learns_the_hardware_of_tiny_films_and_writes_a_row_per_budget_and_data(ic, tiny_data, tmp_path):
    out = tmp_path / "ceiling.csv"
    assert ic.main(["--data", tiny_data, "--eval", tiny_data, "--seeds", "0", "--seconds", "1", "--images", "960",
                    "--input", "96x48", "--width", "8", "--batch", "8", "--cache-side", "96", "--out", str(out)]) == 0
    rows = {r["budget"]: r for r in csv.DictReader(open(out))}
    assert set(rows) == {"seconds", "images"}
    img = rows["images"]
    assert (int(img["steps"]), int(img["images"]), int(img["batch"])) == (60, 960, 16)
    assert (int(img["n_images"]), int(img["n_implant"]), int(img["n_small"])) == (30, 15, 0)
    # every tiny film's hardware is a bright 12 x 12 block: 60 steps separate the films that have one
    assert float(img["auroc"]) >= 0.9
    assert img["auroc_small"] == ""  # no box under a tenth of the film's height


def test_a_malformed_input_size_or_a_missing_folder_is_one_clear_error(ic, tiny_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        ic.main(["--eval", tiny_data, "--input", "128by56"])
    assert "--input must be H x W" in capsys.readouterr().err
    out = tmp_path / "ceiling.csv"
    assert ic.main(["--data", tiny_data, "--eval", f"synth={tmp_path / 'nowhere'}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and "Traceback" not in err
    assert not out.exists()  # nothing trained, nothing written
