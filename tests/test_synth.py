"""The synthetic set: ground truth consistent with what was drawn, every file format decodes to the same picture,
same seed same files, and the ``synth`` specs."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from spinebench import LABEL_MAP, SCOLIOSIS_COBB_DEG
from spinebench.cobb import cobb_angles
from spinebench.data import render, synth
from spinebench.data.records import MANIFEST_COLUMNS
from spinebench.data.sources import load_records
from spinebench.data.splits import check_splits
from spinebench.errors import SpecError
from spinebench.io import load_image

N = 12


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    synth.generate(out, n=N, seed=0, workers=2, progress=False)
    return out


def _first_patient(pred, seed: int = 0) -> int:
    return next(p for p in range(500) if pred(synth.sample_patient(seed, p)))


def test_manifest_is_complete_and_consistent(synth_dir):
    records = load_records(f"synth={synth_dir}")
    assert len(records) == N
    header = (synth_dir / "manifest.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == MANIFEST_COLUMNS
    check_splits(records)  # every image has a split and no patient crosses splits
    assert len({r["patient_id"] for r in records}) < N  # several images per synthetic patient
    for r in records:
        assert r["patient_id"].startswith("synth/p") and r["image_id"].startswith(r["patient_id"] + "-")
        assert r["source"] == "synth" and Path(r["path"]).is_file()
        img, meta = load_image(r["path"])
        assert img.shape == (r["height"], r["width"])
        assert 320 <= r["width"] <= 640 and 800 <= r["height"] <= 1200
        lm = np.asarray(r["landmarks"])
        assert lm.shape == (68, 2)
        assert (lm[:, 0] > 0).all() and (lm[:, 0] < r["width"]).all()
        assert (lm[:, 1] > 0).all() and (lm[:, 1] < r["height"]).all()
        # labels are the shared Cobb function's on the drawn landmarks
        angles = cobb_angles(lm, image_height=r["height"]).angles
        np.testing.assert_allclose([r["cobb_pt"], r["cobb_mt"], r["cobb_tl"]], angles, atol=0.05)
        assert r["scoliosis"] == int(angles.max() >= SCOLIOSIS_COBB_DEG)
        labels = [int(b[4]) for b in r["boxes"]]
        assert labels.count(LABEL_MAP["sco"]) == r["scoliosis"]
        assert (LABEL_MAP["Lum"] in labels) == bool(r["implant"])
        for x0, y0, x1, y1, _ in r["boxes"]:
            assert 0 <= x0 < x1 <= r["width"] and 0 <= y0 < y1 <= r["height"]
        for x0, y0, x1, y1, lab in r["boxes"]:
            if lab == LABEL_MAP["Lum"]:  # the box holds metal, brighter than any bone around it
                box = np.zeros(img.shape, bool)
                box[int(y0):int(math.ceil(y1)), int(x0):int(math.ceil(x1))] = True
                spine = np.zeros(img.shape, bool)
                (sx0, sy0), (sx1, sy1) = lm.min(axis=0).astype(int), lm.max(axis=0).astype(int)
                spine[sy0:sy1, sx0:sx1] = True
                assert np.quantile(img[box], 0.98) > np.quantile(img[spine & ~box], 0.99)


def test_same_seed_same_files(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    synth.generate(a, n=4, seed=3, workers=1, progress=False)
    synth.generate(b, n=4, seed=3, workers=2, progress=False)

    def digest(d: Path) -> dict:
        return {p.relative_to(d).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(d.rglob("*")) if p.is_file()}

    da, db = digest(a), digest(b)
    assert da == db and len(da) == 4 + 2  # images, manifest, completion marker
    c = tmp_path / "c"
    synth.generate(c, n=1, seed=4, workers=1, progress=False)
    assert digest(c) != {k: v for k, v in da.items() if k in digest(c)}


def test_landmarks_are_the_corners_of_the_drawn_bodies():
    img, truth, layers = synth.render_image(0, 2, 0, layers=True)
    mask = layers["bodies"] > 0.5
    for tl, tr, bl, br in truth.landmarks.reshape(17, 4, 2):
        center = (tl + tr + bl + br) / 4
        for corner in (tl, tr, bl, br):
            d = (center - corner) / np.hypot(*(center - corner))
            inside, outside = corner + 2.5 * d, corner - 2.5 * d
            assert mask[int(round(inside[1])), int(round(inside[0]))]
            assert not mask[int(round(outside[1])), int(round(outside[0]))]
        assert mask[int(round(center[1])), int(round(center[0]))]


def _drawn_tilts(bodies: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Tilt (degrees) of each drawn body, measured on the drawing alone: the mean slope of its upper and lower
    edges (the endplates) over the middle of its width, in the body's own frame."""
    comps, _ = ndi.label(bodies > 0.5)
    out = []
    for tl, tr, bl, br in landmarks.reshape(17, 4, 2):
        cx, cy = (tl + tr + bl + br) / 4
        k = comps[int(round(cy)), int(round(cx))]  # the landmarks only pick which drawn body to measure
        assert k > 0
        ys, xs = np.nonzero(comps == k)
        x, y = xs - xs.mean(), ys - ys.mean()
        a0 = 0.5 * math.atan2(2 * (x * y).mean(), (x * x).mean() - (y * y).mean())
        rx = np.round(x * math.cos(a0) + y * math.sin(a0)).astype(int)
        ry = -x * math.sin(a0) + y * math.cos(a0)
        lo, hi = np.quantile(rx, [0.2, 0.8])
        cols = [c for c in np.unique(rx) if lo < c < hi]
        top = np.polyfit(cols, [ry[rx == c].min() for c in cols], 1)[0]
        bottom = np.polyfit(cols, [ry[rx == c].max() for c in cols], 1)[0]
        out.append(math.degrees(a0 + math.atan((top + bottom) / 2)))
    return np.array(out)


@pytest.mark.parametrize("patient", [0, 4, 6, 11, 13])
def test_cobb_labels_match_the_drawn_curve(patient):
    """The largest Cobb angle measured on the drawn bodies equals the label (from the landmarks)."""
    img, truth, layers = synth.render_image(0, patient, 0, layers=True)
    tilts = _drawn_tilts(layers["bodies"], truth.landmarks)
    measured = tilts.max() - tilts.min()  # the largest angle between any two vertebrae, as the Cobb method
    labelled = truth.cobb.max()
    assert abs(measured - labelled) < 2.5, (measured, labelled)
    assert truth.scoliosis == int(labelled >= SCOLIOSIS_COBB_DEG)


def test_every_file_format_decodes_to_the_same_picture(tmp_path):
    img, truth = synth.render_image(0, 1, 0)
    assert img.max() > 0.25  # a 16-bit PNG is then read as 16-bit, not 14 or 12 (the loader's effective depth)
    ref_path = synth.write_image(img, tmp_path / "ref", "png16")
    ref, _ = load_image(ref_path)
    tol = {"png8": 0.5 / 255, "dcm8": 0.5 / 255, "png16": 1e-5}
    metas = {}
    for fmt in synth.FORMATS:
        path = synth.write_image(img, tmp_path / fmt, fmt, uid_key="t", pixel_mm=1 / truth.ppm)
        got, meta = load_image(path)
        metas[fmt] = meta
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= tol.get(fmt, 0.5 / 4095) + 1e-5, fmt  # + the reference's own rounding
    assert metas["dcm12-mono1"]["inverted"] and metas["dcm12-mono1"]["photometric"] == "MONOCHROME1"
    assert metas["dcm-rle"]["transfer_syntax"] == "RLE Lossless"
    assert metas["dcm12"]["bits_stored"] == 12 and metas["dcm8"]["bits_stored"] == 8
    assert metas["dcm12"]["pixel_spacing"] == pytest.approx((1 / truth.ppm, 1 / truth.ppm), rel=1e-4)
    assert metas["png16"]["bits_stored"] == 16


def test_default_set_design():
    """Over the default 600 images: a format mix with PNG the majority, about a third with hardware, and Cobb
    angles from normal to severe (measured with the shared function on the drawn landmarks, no rendering)."""
    plan = synth.image_plan(synth.DEFAULT_N, synth.DEFAULT_SEED)
    assert len(plan) == synth.DEFAULT_N and len({p for p, _ in plan}) < synth.DEFAULT_N / 1.5
    formats = [synth.image_format(0, p, k) for p, k in plan]
    assert set(formats) == set(synth.FORMATS)
    assert sum(f.startswith("png") for f in formats) > 0.6 * len(formats)
    hw = np.mean([synth.has_hardware(synth.sample_patient(0, p), k) for p, k in plan])
    assert 0.25 < hw < 0.42
    largest = []
    for p in range(150):
        pat = synth.sample_patient(0, p)
        sp = synth.build_spine(pat, synth._rng(0, 2, p, 0))
        largest.append(cobb_angles(sp.landmarks, sp.height).angles.max())
    largest = np.array(largest)
    assert 0.2 < (largest < 10).mean() < 0.45
    assert ((largest >= 10) & (largest < 25)).mean() > 0.1
    assert ((largest >= 25) & (largest < 40)).mean() > 0.1
    assert (largest >= 40).mean() > 0.1 and largest.max() < 95


def test_framing_matches_the_real_films():
    """The column fills the film as on the AASCE radiographs (measured on their 481 training films: T1 top at
    0.04 +- 0.01 of the height, L5 bottom at 0.92 +- 0.04, width / height 0.40 +- 0.05); v2 ended L5 at 0.85."""
    top, bottom, aspect = [], [], []
    for p in range(80):
        sp = synth.build_spine(synth.sample_patient(0, p), synth._rng(0, 2, p, 0))
        lm = sp.landmarks
        top.append(lm[:4, 1].min() / sp.height)
        bottom.append(lm[-4:, 1].max() / sp.height)
        aspect.append(sp.width / sp.height)
    assert 0.02 < np.mean(top) < 0.06 and 0.87 < np.mean(bottom) < 0.95, (np.mean(top), np.mean(bottom))
    assert 0.33 < np.mean(aspect) < 0.5


def test_stitch_seam_is_a_line_and_an_exposure_step():
    img = np.full((1000, 400), 0.5, np.float32)
    seamed = [synth._stitch(img, np.random.default_rng(k)) for k in range(40)]
    changed = [s for s in seamed if not np.array_equal(s, img)]
    assert 0.15 < len(changed) / len(seamed) < 0.6 and np.array_equal(img, np.full((1000, 400), 0.5))  # input kept
    for s in changed:
        rows = s.mean(1)
        y0 = int(np.flatnonzero(rows != 0.5).min())
        assert 290 <= y0 <= 650  # across the middle of the film, not at its edges; above it nothing changed
        below = rows[y0 + 12:]
        assert np.ptp(below) < 1e-6  # one exposure step below the seam, the same for every row
        assert abs(rows[y0] - 0.5) >= 0.049  # and a line at the seam itself, 0.05-0.15 bright or dark


def test_long_fusion_on_a_scoliotic_spine_is_boxed():
    p = _first_patient(lambda pat: pat.hardware == "long_fusion" and not pat.preop_first)
    img, truth = synth.render_image(0, p, 0)
    assert truth.hardware == ["long_fusion"] and truth.implant == 1
    lum = [b for b in truth.boxes if b[4] == LABEL_MAP["Lum"]]
    assert len(lum) == 1
    x0, y0, x1, y1, _ = lum[0]
    assert y1 - y0 > 0.35 * img.shape[0]  # spans many levels


def test_hardware_planning_covers_every_kind():
    img, truth = synth.render_image(0, 0, 0)
    for kind in render.HARDWARE_KINDS:
        cons = render.plan_hardware(truth.landmarks, np.random.default_rng(0), kind)
        thick, boxes = render.metal_map(img.shape, cons)
        assert len(boxes) == len(cons) == 1 and thick.max() > 0.5, kind
        x0, y0, x1, y1 = (int(v) for v in boxes[0])
        visible = thick > 0.02  # the box is the extent of the visible metal, exactly
        ys, xs = np.nonzero(visible)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
    with pytest.raises(ValueError):
        render.plan_hardware(truth.landmarks, np.random.default_rng(0), "staple")


def test_noise_and_blur_are_measured_from_the_image():
    rng = np.random.default_rng(0)
    base = np.full((300, 300), 0.5, np.float32)
    for blur in (0.6, 1.5):
        noisy = base + render.matched_noise(base.shape, 0.02, blur, rng)
        noise, est = render.estimate_noise_blur(noisy)
        assert noise == pytest.approx(0.02, rel=0.2)
        assert est == pytest.approx(blur, abs=0.35)


def test_synth_specs(tmp_path, monkeypatch, synth_dir):
    with pytest.raises(SpecError):
        load_records(f"synth={tmp_path / 'nothing'}")
    monkeypatch.setenv("SPINEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(synth, "DEFAULT_N", 3)
    records = load_records("synth")
    assert len(records) == 3
    d = synth.default_dir()
    assert (d / synth.COMPLETE_MARKER).is_file() and f"v{synth.GENERATOR_VERSION}-n3-s0" in str(d)

    def fail(*a, **k):
        raise AssertionError("the cached default set was generated again")

    monkeypatch.setattr(synth, "generate", fail)
    assert [r["image_id"] for r in load_records("synth")] == [r["image_id"] for r in records]
    # a set drawn by other generator code under the same version (its marker names other code) is drawn again
    marker = d / synth.COMPLETE_MARKER
    marker.write_text(marker.read_text().replace(render.code_fingerprint(synth, render), "0123456789ab"))
    with pytest.raises(AssertionError, match="generated again"):
        load_records("synth")
    marker.unlink()  # a killed generation leaves no marker: it is redone
    with pytest.raises(AssertionError, match="generated again"):
        load_records("synth")


def test_code_fingerprint_follows_the_source():
    fp = render.code_fingerprint(synth, render)
    assert len(fp) == 12 and int(fp, 16) >= 0 and fp == render.code_fingerprint(synth, render)
    assert fp != render.code_fingerprint(render, synth) != render.code_fingerprint(render)
    assert render.code_fingerprint(object()) == "unknown"  # no source file: the version numbers alone


def test_a_run_that_keeps_few_pixels_gets_the_same_films_at_half_size(tmp_path, monkeypatch):
    """``load_records(..., max_side=320)`` (the quick profile's cache) renders the default set at scale 0.5: the same
    patients, labels, hardware and framing (landmarks at half the pixels), 400-600 px tall, in its own cache folder;
    a run that keeps 1024 px gets the full-size set."""
    assert synth.scale_for(320) == 0.5 and synth.scale_for(1024) == 1.0 and synth.scale_for(None) == 1.0
    monkeypatch.setenv("SPINEBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(synth, "DEFAULT_N", 3)
    half, full = load_records("synth", max_side=320), load_records("synth", max_side=1024)
    assert synth.default_dir(scale=0.5) != synth.default_dir() and (synth.default_dir(scale=0.5) / "manifest.csv").is_file()
    for h, f in zip(half, full):
        assert h["image_id"] == f["image_id"] and 400 <= h["height"] <= 600 and 800 <= f["height"] <= 1200
        assert (h["implant"], h["scoliosis"], h["split"]) == (f["implant"], f["scoliosis"], f["split"])
        np.testing.assert_allclose(np.asarray(h["landmarks"]) / h["height"], np.asarray(f["landmarks"]) / f["height"],
                                   atol=2e-3)
        assert h["cobb_mt"] == pytest.approx(f["cobb_mt"], abs=0.5)
        img, _ = load_image(Path(synth.default_dir(scale=0.5)) / h["path"])
        assert img.shape == (h["height"], h["width"])


def test_cli_and_contact_sheet(tmp_path, synth_dir):
    from PIL import Image

    from spinebench.cli import main

    sheet = tmp_path / "sheet.png"
    assert main(["-q", "data", "synth", "--contact-sheet", str(sheet), "--sheet-n", "2"]) == 0
    assert Image.open(sheet).size[1] > 400
    sheet2 = synth.contact_sheet(tmp_path / "s2.png", source=synth_dir, n=4)
    assert Image.open(sheet2).size[0] > 4 * 100


def test_synthetic_thoracic_rods_sit_wider_than_the_hybrid_ones():
    """Long fusions on synthetic films put the thoracic screw heads, and so the rods, about
    THORACIC_SCREW_HEAD body widths out from the centre; drawn without it (the hybrid renders on real films) they
    sit at the body's edge."""
    _, truth = synth.render_image(0, 1, 0)
    lm = truth.landmarks
    mid = render.vertebrae_from_landmarks(lm)[7]  # T8
    assert synth.THORACIC_SCREW_HEAD > 0.6

    def rods_apart(head):
        con = render.plan_hardware(lm, np.random.default_rng(3), "long_fusion", thoracic_head=head)[0]
        assert min(con.levels) < 7 < max(con.levels)
        xs = []
        for part in con.parts:
            if part.layer == render.LAYER_ROD and len(part.pts) > 2:  # the rods, not the cross-link
                near = np.abs((part.pts - mid.center) @ mid.v) < mid.height
                xs.append(float(np.mean((part.pts[near] - mid.center) @ mid.u)))
        return (max(xs) - min(xs)) / mid.width

    assert abs(rods_apart(synth.THORACIC_SCREW_HEAD) - 2 * synth.THORACIC_SCREW_HEAD) < 0.25
    assert abs(rods_apart(None) - 1.0) < 0.2
