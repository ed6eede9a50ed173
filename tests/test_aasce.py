"""The AASCE 2019 reader: a tiny generated layout everywhere, and the real training split when it is present."""

from __future__ import annotations

import csv
import math
import time

import numpy as np
import pytest
from PIL import Image

from spinebench import LABEL_MAP
from spinebench.cobb import cobb_angles
from spinebench.data.aasce import load_aasce, patient_of
from spinebench.data.sources import load_records
from spinebench.data.splits import assign_splits, check_splits
from spinebench.errors import SpecError
from spinebench.paths import default_aasce_path


def _spine(tilts_deg, width_px: int, height_px: int) -> np.ndarray:
    """(68, 2) corners of 17 tilted boxes stacked down the middle of a width x height image."""
    step = height_px * 0.8 / 17
    pts = []
    for k, t in enumerate(np.radians(tilts_deg)):
        c, s = math.cos(t), math.sin(t)
        cx, cy = width_px / 2 + 8 * math.sin(2 * math.pi * k / 16), height_px * 0.1 + (k + 0.5) * step
        for dx, dy in ((-1, -1), (1, -1), (-1, 1), (1, 1)):
            x, y = dx * width_px * 0.15, dy * step * 0.35
            pts.append([cx + c * x - s * y, cy + s * x + c * y])
    return np.array(pts)


CURVED = [0, 3, 6, 9, 12, 9, 6, 3, 0, -3, -6, -9, -12, -9, -6, -3, 0]  # 24 degrees between vertebrae 4 and 12


@pytest.fixture
def fake_aasce(tmp_path):
    """boostnet_labeldata with 3 training images (2 .mat, 1 only in landmarks.csv) and 1 test image."""
    scipy_io = pytest.importorskip("scipy.io")
    root = tmp_path / "boostnet_labeldata"
    items = {  # split, name, tilts, has .mat
        ("training", "sunhl-1th-02-Jan-2017-7 A AP.jpg"): (CURVED, True),
        ("training", "sunhl-1th-02-Jan-2017-7 B AP.jpg"): ([0] * 17, True),
        ("training", "sunhl-1th-20-Jul-2016-coronal3.jpg"): (CURVED, False),
        ("test", "sunhl-1th-01-Mar-2017-312 A AP (2).jpg"): (CURVED, True),
    }
    for split in ("training", "test"):
        (root / "data" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    rows: dict[str, list] = {"training": [], "test": []}
    for (split, name), (tilts, has_mat) in items.items():
        w, h = 120, 400
        Image.fromarray(np.full((h, w), 90, np.uint8)).save(root / "data" / split / name)
        pts = _spine(tilts, w, h)
        if has_mat:
            scipy_io.savemat(root / "labels" / split / f"{name}.mat", {"p2": np.round(pts).astype(np.uint16)})
        rows[split].append((name, np.concatenate([pts[:, 0] / w, pts[:, 1] / h])))
    for split, entries in rows.items():
        with open(root / "labels" / split / "filenames.csv", "w", newline="") as f:
            csv.writer(f).writerows([[n] for n, _ in entries])
        with open(root / "labels" / split / "landmarks.csv", "w", newline="") as f:
            csv.writer(f).writerows([[f"{v:.6f}" for v in row] for _, row in entries])
    return tmp_path


def test_fake_layout_records(fake_aasce):
    recs = {r["image_id"]: r for r in load_aasce(str(fake_aasce))}
    assert sorted(recs) == sorted([
        "aasce/sunhl-1th-02-Jan-2017-7 A AP", "aasce/sunhl-1th-02-Jan-2017-7 B AP",
        "aasce/sunhl-1th-20-Jul-2016-coronal3", "aasce/sunhl-1th-01-Mar-2017-312 A AP (2)",
    ])
    a, b = recs["aasce/sunhl-1th-02-Jan-2017-7 A AP"], recs["aasce/sunhl-1th-02-Jan-2017-7 B AP"]
    coronal = recs["aasce/sunhl-1th-20-Jul-2016-coronal3"]
    test = recs["aasce/sunhl-1th-01-Mar-2017-312 A AP (2)"]
    assert a["patient_id"] == b["patient_id"] == "aasce/7"
    assert coronal["patient_id"] == "aasce/sunhl-1th-20-Jul-2016-coronal3"
    assert test["patient_id"] == "aasce/312" and test["origin_split"] == "test"
    assert a["origin_split"] == "training" and a["source"] == "aasce" and a["implant"] == 0
    assert (a["width"], a["height"]) == (120, 400)
    assert a["scoliosis"] == 1 and a["cobb_pt"] == pytest.approx(24.0, abs=0.6)
    assert b["scoliosis"] == 0 and b["boxes"] == [] and b["cobb_pt"] == pytest.approx(0.0, abs=0.6)
    (box,) = a["boxes"]
    assert box[4] == LABEL_MAP["sco"]
    lm = np.array(a["landmarks"])
    assert lm.shape == (68, 2)
    # the box runs from the top of vertebra 4 to the bottom of vertebra 12, inside the image
    assert box[1] <= lm[16:20, 1].min() and box[3] >= lm[48:52, 1].max()
    assert 0 <= box[0] < box[2] <= 120 and 0 <= box[1] < box[3] <= 400
    # the csv-only image got its landmarks from landmarks.csv scaled by the image size, unrounded
    np.testing.assert_allclose(coronal["landmarks"], _spine(CURVED, 120, 400), atol=0.01)
    assert coronal["cobb_pt"] == pytest.approx(24.0, abs=1e-3)
    assert coronal["cobb_pt"] == pytest.approx(cobb_angles(coronal["landmarks"], 400).pt, abs=0.01)


def test_fake_layout_path_forms_and_missing_splits(fake_aasce):
    direct = load_records(f"aasce={fake_aasce / 'boostnet_labeldata'}")
    assert len(direct) == len(load_records(f"aasce={fake_aasce}")) == 4
    # a split may be absent
    for p in (fake_aasce / "boostnet_labeldata" / "data" / "test").iterdir():
        p.unlink()
    (fake_aasce / "boostnet_labeldata" / "data" / "test").rmdir()
    assert {r["origin_split"] for r in load_aasce(str(fake_aasce))} == {"training"}
    # but not all of them
    for p in (fake_aasce / "boostnet_labeldata" / "data" / "training").iterdir():
        p.unlink()
    (fake_aasce / "boostnet_labeldata" / "data" / "training").rmdir()
    with pytest.raises(SpecError, match="neither training nor test"):
        load_aasce(str(fake_aasce))


def test_wrong_paths_are_refused(tmp_path):
    with pytest.raises(SpecError, match="no AASCE layout"):
        load_records(f"aasce={tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="no AASCE layout"):
        load_aasce(str(tmp_path / "empty"))


def test_patient_of_names():
    assert patient_of("sunhl-1th-02-Jan-2017-162 A AP") == "162"
    assert patient_of("sunhl-1th-10-Dec-2016-98 A AP2") == "98"
    assert patient_of("sunhl-1th-10-Nov-2016-77 A AP (2)") == "77"
    assert patient_of("sunhl-1th-20-Jul-2016-coronal10") == "sunhl-1th-20-Jul-2016-coronal10"


@pytest.fixture(scope="module")
def real_training():
    root = default_aasce_path()
    if not (root / "boostnet_labeldata" / "labels" / "training" / "angles.csv").is_file():
        pytest.skip(f"AASCE training data not found under {root}")
    start = time.perf_counter()
    recs = load_aasce(str(root))
    return root, recs, time.perf_counter() - start


@pytest.mark.aasce
def test_real_training_split(real_training):
    root, recs, seconds = real_training
    train = [r for r in recs if r["origin_split"] == "training"]
    assert len(train) == 481
    assert len({r["patient_id"] for r in train}) == 237
    assert seconds < 10  # headers only, no pixel decoding (about 0.5 s here)
    off = 0
    for r in train:
        lm = np.array(r["landmarks"])
        assert lm.shape == (68, 2)
        # every landmark on the image, give or take a few percent (one image's L5 runs off its bottom edge)
        assert lm.min() >= 0 and lm[:, 0].max() <= r["width"] and lm[:, 1].max() <= 1.05 * r["height"]
        off += lm[:, 1].max() > r["height"]
        assert r["scoliosis"] == int(max(r["cobb_pt"], r["cobb_mt"], r["cobb_tl"]) >= 10)
        assert len(r["boxes"]) == r["scoliosis"]
    assert off <= 1
    # the README's figure: 18 images under 10 degrees
    assert sum(r["scoliosis"] == 0 for r in train) == 18


@pytest.mark.aasce
def test_real_angles_match_the_distributed_labels(real_training):
    root, recs, _ = real_training
    labels = root / "boostnet_labeldata" / "labels" / "training"
    with open(labels / "filenames.csv", newline="") as f:
        names = [r[0] for r in csv.reader(f) if r]
    with open(labels / "angles.csv", newline="") as f:
        truth = {n: [float(v) for v in r] for n, r in zip(names, csv.reader(f))}
    by_id = {r["image_id"]: r for r in recs}
    got = np.array([[by_id[f"aasce/{n[:-4]}"][k] for k in ("cobb_pt", "cobb_mt", "cobb_tl")] for n in names])
    mad = np.abs(got - np.array([truth[n] for n in names])).mean(axis=0)
    assert np.all(mad < 0.01), mad


@pytest.mark.aasce
def test_real_patient_split_and_path_forms(real_training):
    root, recs, _ = real_training
    recs = assign_splits([dict(r) for r in recs], seed=0)
    check_splits(recs)
    split_of: dict[str, set] = {}
    for r in recs:
        split_of.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())
    counts = {s: sum(r["split"] == s for r in recs) for s in ("train", "val", "test")}
    assert 0.6 < counts["train"] / len(recs) < 0.8 and counts["test"] > 40
    assert len(load_aasce(str(root / "boostnet_labeldata"))) == len(recs)


def test_postoperative_names():
    from spinebench.data.aasce import _is_postoperative

    assert _is_postoperative("sunhl-1th-22-Nov-2016-141 F AP")
    assert not _is_postoperative("sunhl-1th-22-Nov-2016-141 A AP")
    assert not _is_postoperative("sunhl-1th-20-Jul-2016-coronal6")


@pytest.mark.aasce
def test_real_postoperative_films_are_implant_positive(real_training):
    _, real_training, _ = real_training
    positives = sorted(r["image_id"] for r in real_training if r["implant"])
    assert len(positives) == 10
    assert "aasce/sunhl-1th-22-Nov-2016-141 F AP" in positives
    # the image-level truth has no hardware box to go with it
    assert all(b[4] != 1 for r in real_training for b in r["boxes"])
