"""Hardware drawn onto radiographs (``hybrid:``): which images get it, exact boxes, the rest of the picture left
alone, originals and copies in one split, the cache. Runs on a generated image; the real AASCE data when present."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from spinebench import LABEL_MAP
from spinebench.data import hybrid, synth
from spinebench.data.records import make_record
from spinebench.data.sources import load_records
from spinebench.data.splits import assign_splits, check_splits
from spinebench.errors import SpecError
from spinebench.io import load_image
from spinebench.paths import default_aasce_path

LUM, SCO = LABEL_MAP["Lum"], LABEL_MAP["sco"]


def _ids(selected: bool, k: int) -> list[str]:
    return [f"fake/{i}" for i in range(200) if hybrid.is_selected(f"fake/{i}") == selected][:k]


@pytest.fixture
def fake_records(tmp_path, monkeypatch) -> list[dict]:
    """Two radiographs without hardware (one drawn for hardware, one not) and one without landmarks."""
    monkeypatch.setenv("SPINEBENCH_CACHE", str(tmp_path / "cache"))
    p = next(p for p in range(100) if synth.sample_patient(0, p).hardware is None)
    img, truth = synth.render_image(0, p, 0)
    path = synth.write_image(img, tmp_path / "radiograph", "png8")
    H, W = img.shape
    sco_box = [10.0, 20.0, 200.0, 400.0, SCO]
    common = dict(patient_id="fake/p1", source="fake", path=str(path), width=W, height=H,
                  landmarks=truth.landmarks.tolist(), boxes=[sco_box], scoliosis=1, cobb_pt=12.0)
    yes, no = _ids(True, 1)[0], _ids(False, 1)[0]
    return [make_record(image_id=yes, **common), make_record(image_id=no, **common),
            make_record(image_id="fake/nolandmarks", patient_id="fake/p2", source="fake", path=str(path))]


def test_hardware_copy_with_exact_boxes(fake_records, caplog):
    with caplog.at_level(logging.WARNING):
        out = hybrid.hybrid(fake_records, workers=1)
    assert "no landmarks" in caplog.text
    assert [r["image_id"] for r in out] == [fake_records[0]["image_id"], fake_records[0]["image_id"] + "+hw",
                                            fake_records[1]["image_id"], "fake/nolandmarks"]
    orig, hw = out[0], out[1]
    assert hw["patient_id"] == orig["patient_id"] and hw["source"] == "hybrid" and hw["implant"] == 1
    assert hw["landmarks"] == orig["landmarks"] and orig["implant"] == 0
    assert [b for b in hw["boxes"] if b[4] == SCO] == orig["boxes"]  # the sco box is kept
    lum = [b for b in hw["boxes"] if b[4] == LUM]
    assert len(lum) >= 1
    a, _ = load_image(orig["path"])
    b, _ = load_image(hw["path"])
    assert a.shape == b.shape == (hw["height"], hw["width"])
    changed = np.abs(b - a) > 1.5 / 255
    near = np.zeros_like(changed)
    for x0, y0, x1, y1, _ in lum:
        assert 0 <= x0 < x1 <= hw["width"] and 0 <= y0 < y1 <= hw["height"]
        crop = b[int(y0):int(math.ceil(y1)), int(x0):int(math.ceil(x1))]
        assert np.quantile(crop, 0.99) > 0.9  # metal is bright
        # the box is tight: its border rows and columns hold metal
        assert changed[int(y0), int(x0):int(x1)].any() and changed[int(y1) - 1, int(x0):int(x1)].any()
        m = 25  # blur, noise and halo reach a little beyond the metal
        near[max(0, int(y0) - m):int(y1) + m, max(0, int(x0) - m):int(x1) + m] = True
    assert changed[near].mean() > 0.05 and not changed[~near].any()  # nothing else in the picture moved
    # the copy and its original always fall in the same split
    for seed in range(5):
        recs = assign_splits([dict(r) for r in out], seed=seed)
        check_splits(recs)
        assert recs[0]["split"] == recs[1]["split"]


def test_renders_are_cached(fake_records, monkeypatch):
    first = hybrid.hybrid(fake_records, workers=1)

    def fail(*a, **k):
        raise AssertionError("rendered again")

    monkeypatch.setattr(hybrid, "render_record", fail)
    again = hybrid.hybrid(fake_records, workers=1)
    assert again == first


def test_refuses_sources_without_landmarks(fake_records):
    with pytest.raises(SpecError, match="landmarks"):
        hybrid.hybrid([fake_records[2]])


def test_selection_is_deterministic_and_about_a_third():
    ids = [f"src/{i}" for i in range(3000)]
    share = np.mean([hybrid.is_selected(i) for i in ids])
    assert 0.3 < share < 0.37
    assert [hybrid.is_selected(i) for i in ids[:50]] == [hybrid.is_selected(i) for i in ids[:50]]


def test_hybrid_spec_over_synth(tmp_path, monkeypatch):
    monkeypatch.setenv("SPINEBENCH_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "s"
    synth.generate(d, n=6, seed=1, workers=1, progress=False)
    recs = load_records(f"hybrid:synth={d}")
    base = [r for r in recs if r["source"] == "synth"]
    copies = [r for r in recs if r["source"] == "hybrid"]
    assert len(base) == 6
    expected = [r["image_id"] + "+hw" for r in base if hybrid.is_selected(r["image_id"]) and not r["implant"]]
    assert [r["image_id"] for r in copies] == expected


@pytest.mark.aasce
def test_hybrid_on_real_radiographs(tmp_path, monkeypatch):
    root = default_aasce_path()
    if not root.exists():
        pytest.skip(f"AASCE data not found at {root}")
    monkeypatch.setenv("SPINEBENCH_CACHE", str(tmp_path / "cache"))
    records = load_records(f"aasce={root}")
    share = np.mean([hybrid.is_selected(r["image_id"]) for r in records])
    assert 0.25 < share < 0.42
    subset = [r for r in records if hybrid.is_selected(r["image_id"])][:3] + records[:3]
    subset = list({r["image_id"]: r for r in subset}.values())
    out = hybrid.hybrid(subset, workers=2)
    copies = [r for r in out if r["image_id"].endswith("+hw")]
    assert len(copies) >= 3 and len(out) == len(subset) + len(copies)
    for r in copies:
        lm = np.asarray(r["landmarks"])
        img, _ = load_image(r["path"])
        assert img.shape == (r["height"], r["width"])
        for x0, y0, x1, y1, lab in r["boxes"]:
            assert 0 <= x0 < x1 <= r["width"] and 0 <= y0 < y1 <= r["height"]
            if lab == LUM:  # on the spine, not in the lungs or outside the body
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                assert lm[:, 0].min() - 0.1 * r["width"] < cx < lm[:, 0].max() + 0.1 * r["width"]
                assert lm[:, 1].min() < cy < lm[:, 1].max() + 0.1 * r["height"]
    recs = assign_splits(out, seed=0)
    check_splits(recs)
    splits = {r["image_id"]: r["split"] for r in recs}
    assert all(splits[r["image_id"]] == splits[r["image_id"][:-3]] for r in copies)


def test_no_hardware_on_malformed_vertebrae():
    """Real annotations hold the odd misplaced corner (AASCE ...-coronal6: L4's bottom-right corner sits on its
    bottom-left one); hardware is never planned across such a vertebra, and a spine without a sane level gets
    none (and so no hardware copy)."""
    from spinebench.data import render

    _, truth = synth.render_image(0, 1, 0)
    lm = truth.landmarks.copy()
    lm[4 * 15 + 3] = lm[4 * 15 + 2] + [2, -1]  # L4: BR collapsed onto BL
    assert render.plausible(render.vertebrae_from_landmarks(lm)).tolist() == [i != 15 for i in range(17)]
    rng = np.random.default_rng(0)
    for kind in [None] * 20 + ["cage", "plate", "pedicle_rod"] * 5:
        for con in render.plan_hardware(lm, rng, kind):
            assert not min(con.levels) <= 15 <= max(con.levels)
    flat = np.repeat(lm[:4], 17, axis=0)  # every vertebra the same degenerate quad
    flat[1::4] = flat[0::4]
    img = np.full((truth.landmarks[:, 1].max().astype(int) + 50, 400), 0.5, np.float32)
    out, boxes, constructs = render.add_hardware(img, flat, np.random.default_rng(0))
    assert boxes == [] and constructs == [] and np.array_equal(out, img)


def test_no_hardware_on_vertebrae_out_of_place():
    """In 18 AASCE training films the body annotated as L5 sits above T1 (and in others on top of L4): a
    plan on it drew rods from the neck to the pelvis. Such a body is out of place (and, lying on another, both
    are); plans never reach it, and every box stays on the annotated column."""
    from spinebench.data import render

    img, truth = synth.render_image(0, 1, 0)
    lm, margin = truth.landmarks.copy(), 0.05 * img.shape[0]
    assert render.plausible(render.vertebrae_from_landmarks(lm)).all()
    top = lm[:4, 1].min()
    on_top = lm.copy()
    on_top[64:] -= [0, on_top[67, 1] - top + 20]  # L5 drawn above T1, as in ...-227 E AP
    assert render.plausible(render.vertebrae_from_landmarks(on_top)).tolist() == [i != 16 for i in range(17)]
    stacked = lm.copy()
    stacked[64:] = lm[60:64] + [3, 2]  # L5 on L4, as in ...-25-Jul-2016-15 B AP
    assert render.plausible(render.vertebrae_from_landmarks(stacked)).tolist() == [i < 15 for i in range(17)]
    rng = np.random.default_rng(0)
    for bad, worst in ((on_top, 16), (stacked, 15)):
        spine_y = bad[:worst * 4, 1]
        for kind in [None] * 20 + ["pedicle_rod", "long_fusion", "single_screw"] * 5:
            for con in render.plan_hardware(bad, rng, kind):
                assert max(con.levels) < worst
                x0, y0, x1, y1 = con.extent()
                assert spine_y.min() - margin < y0 and y1 < spine_y.max() + margin
