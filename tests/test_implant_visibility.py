"""benchmarks/bench_implant_visibility.py: the hardware's contrast at a model's input, and AUROC per contrast band.

The contrast is what the benchmark's conclusion rests on (faint hardware, not missing learning, caps the quick
classifiers' implant AUROC), so it is checked on hand-made pairs with a known answer and on real generator films.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_benchmark

from spinebench.data import synth
from spinebench.data.sources import load_records


@pytest.fixture(scope="module")
def vis():
    return load_benchmark("bench_implant_visibility")


def test_contrast_is_the_hardware_as_the_input_size_averages_it(vis):
    bare = np.full((400, 160), 0.3, np.float32)
    img = bare.copy()
    img[200:204, 80:84] = 1.0  # a 4 x 4 px bright part: 0.7 above the film
    box = [[78, 198, 86, 206]]
    assert vis.hardware_contrast(img, bare, (400, 160), box) == pytest.approx(0.7, abs=1e-5)
    # a quarter of the size in each direction: the part fills one input pixel, half of it at an eighth
    assert vis.hardware_contrast(img, bare, (100, 40), box) == pytest.approx(0.7, abs=1e-5)
    assert vis.hardware_contrast(img, bare, (50, 20), box) == pytest.approx(0.7 / 4, abs=1e-5)
    # a model that shrinks by each cell's brightest pixel (downsample "max") receives all of it
    assert vis.hardware_contrast(img, bare, (50, 20), box, "max") == pytest.approx(0.7, abs=1e-5)
    # ... of the film as a run decodes it: a 200 px cache has already averaged a 1 px pin down
    pin = bare.copy()
    pin[200:204, 81] = 1.0
    assert vis.hardware_contrast(pin, bare, (50, 20), box, "max") == pytest.approx(0.7, abs=1e-5)
    cached = vis.hardware_contrast(pin, bare, (50, 20), box, "max", cache_side=200)
    assert 0.1 < cached < 0.7 / 2 + 0.05
    assert vis.hardware_contrast(img, bare, (50, 20), box, "max", cache_side=400) == pytest.approx(0.7, abs=1e-3)
    # a film-wide shift (the generator's stretch sees the metal too) is not the hardware's contrast
    shifted = img + 0.2
    assert vis.hardware_contrast(shifted, bare, (100, 40), box) == pytest.approx(0.7, abs=1e-5)
    assert vis.hardware_contrast(bare + 0.2, bare, (100, 40), box) == pytest.approx(0.0, abs=1e-5)


def test_detector_input_keeps_the_films_aspect(vis):
    film = {"height": 480, "width": 200}
    assert vis.input_hw("classification", (128, 56), film) == (128, 56)
    assert vis.input_hw("detection", (160, 192), film) == (192, 80)   # the long side caps it
    assert vis.input_hw("detection", (160, 192), {"height": 200, "width": 180}) == (178, 160)  # the short side


def test_bands_score_each_bands_implants_against_all_negatives(vis):
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.25, 0.15])
    contrast = np.array([np.nan] * 4 + [0.5, 0.45, 0.05, 0.02])
    row = vis.band_aurocs(y, p, contrast)
    assert row["n_0.4"] == 2 and row["auroc_0.4"] == 1.0   # bright hardware ranked above every negative
    assert row["n_0"] == 2 and row["auroc_0"] == pytest.approx((2 + 1) / 8)  # faint: 0.25 beats 2 of 4, 0.15 1 of 4
    assert row["n_0.1"] == 0 and row["auroc_0.1"] == ""


def test_kinds_score_each_kinds_implants_against_all_negatives(vis):
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.8, 0.25, 0.15])
    kinds = ["", "", "", "", "pedicle_rod", "pedicle_rod", "cage", "single_screw"]
    row = vis.kind_aurocs(y, p, kinds)
    assert row["n_pedicle_rod"] == 2 and row["auroc_pedicle_rod"] == 1.0
    assert row["n_cage"] == 1 and row["auroc_cage"] == 0.5   # 0.25 above 2 of the 4 films without hardware
    assert row["n_single_screw"] == 1 and row["auroc_single_screw"] == 0.25
    assert row["n_plate"] == 0 and row["auroc_plate"] == ""


def test_generator_films_re_render_with_and_without_their_hardware(vis, tmp_path):
    synth.generate(tmp_path, n=24, seed=3, workers=2, progress=False, scale=0.5)
    records = load_records(f"synth={tmp_path}")
    implants = [r for r in records if r["implant"]]
    assert implants
    pairs = vis.rendered_pairs(records, seed=3, scale=0.5)
    assert pairs and set(pairs) <= {r["image_id"] for r in implants}
    assert len(pairs) == len(implants)  # every implant film re-renders at its size, a corrected fused spine too
    assert not vis.rendered_pairs(records, seed=3, scale=0.25)  # another scale matches none
    by_id = {r["image_id"]: r for r in records}
    for image_id, (img, bare, kind) in pairs.items():
        assert kind in vis.HARDWARE_KINDS  # what the generator drew on that film
        boxes = vis._implant_boxes(by_id[image_id])
        assert img.shape == bare.shape and not np.array_equal(img, bare)
        # at the film's own size the hardware stands out; shrinking never makes it brighter than that
        full = vis.hardware_contrast(img, bare, img.shape, boxes)
        assert full > 0.05
        assert vis.hardware_contrast(img, bare, (128, 56), boxes) <= full + 1e-6


def test_hybrid_copies_pair_with_the_radiograph_they_were_drawn_on(vis, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    film = (rng.random((120, 50)) * 200).astype(np.uint8)
    with_hw = film.copy()
    with_hw[60:64, 20:24] = 255
    Image.fromarray(film).save(tmp_path / "a.png")
    Image.fromarray(with_hw).save(tmp_path / "a_hw.png")
    (tmp_path / "a_hw.json").write_text('{"boxes": [[20, 60, 24, 64]], "hardware": ["cage"]}')  # its render's
    Image.fromarray(film[:100]).save(tmp_path / "b_hw.png")  # a copy whose size differs: left out
    records = [dict(image_id="aasce/a", path=str(tmp_path / "a.png"), implant=0),
               dict(image_id="aasce/a+hw", path=str(tmp_path / "a_hw.png"), implant=1),
               dict(image_id="aasce/b", path=str(tmp_path / "a.png"), implant=0),
               dict(image_id="aasce/b+hw", path=str(tmp_path / "b_hw.png"), implant=1)]
    pairs = vis.hybrid_pairs(records)
    assert list(pairs) == ["aasce/a+hw"]
    img, bare, kind = pairs["aasce/a+hw"]
    assert np.abs(img - bare).max() > 0.2 and np.array_equal(img[:60], bare[:60])
    assert kind == "cage"
