"""The VinDr-SpineXR reader on a miniature copy of its layout (tests/fixtures/vindr_mini, see make_fixture.py)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from spinebench.data.sources import load_records
from spinebench.data.splits import assign_splits
from spinebench.data.vindr import load_vindr
from spinebench.errors import SpecError

FIXTURE = Path(__file__).parent / "fixtures" / "vindr_mini"


@pytest.fixture
def vindr_copy(tmp_path):
    dst = tmp_path / "vindr"
    shutil.copytree(FIXTURE, dst)
    return dst


def test_records_from_the_fixture(caplog):
    with caplog.at_level(logging.WARNING, logger="spinebench.data.vindr"):
        recs = {r["image_id"]: r for r in load_records(f"vindr={FIXTURE}")}
    assert sorted(recs) == ["vindr/a1implant", "vindr/a2lateral", "vindr/b1osteo", "vindr/c1normal"]
    assert "1 images of train.csv are not in train_images/" in caplog.text  # d1missing

    a1, a2, b1, c1 = (recs[f"vindr/{k}"] for k in ("a1implant", "a2lateral", "b1osteo", "c1normal"))
    # two Surgical implant rows -> two Lum boxes (the second clipped to the 40 px wide image); osteophyte dropped
    assert a1["implant"] == 1
    assert a1["boxes"] == [[12.0, 30.0, 28.0, 44.0, 1], [10.5, 29.5, 40.0, 45.0, 1]]
    assert (a1["width"], a1["height"]) == (40, 56)
    # a lesion that is neither finding does not make the image positive
    assert b1["implant"] == 0 and b1["boxes"] == []
    assert a2["implant"] == 0 and a2["boxes"] == []
    assert all(r["scoliosis"] == 0 and r["source"] == "vindr" for r in recs.values())
    # one study = one patient
    assert a1["patient_id"] == a2["patient_id"] == "vindr/s1" and b1["patient_id"] == "vindr/s2"
    assert [r["origin_split"] for r in (a1, b1, c1)] == ["training", "training", "test"]
    assert Path(a1["path"]).is_absolute() and Path(a1["path"]).is_file()


def test_study_stays_in_one_split():
    recs = load_vindr(str(FIXTURE))
    for seed in range(5):
        assign_splits(recs, seed=seed)
        by_id = {r["image_id"]: r["split"] for r in recs}
        assert by_id["vindr/a1implant"] == by_id["vindr/a2lateral"]
    assign_splits(recs, mode="official")
    assert next(r for r in recs if r["image_id"] == "vindr/c1normal")["split"] == "test"


def test_fixture_follows_the_pixel_contract():
    io = pytest.importorskip("spinebench.io")
    img, meta = io.load_image(FIXTURE / "train_images" / "a1implant.dicom")
    assert img.shape == (56, 40) and meta["format"] == "dicom"
    assert img[36, 20] > img[10, 20] > img[10, 3]  # metal brighter than bone brighter than soft tissue
    inv, meta = io.load_image(FIXTURE / "test_images" / "c1normal.dicom")  # MONOCHROME1
    assert meta["inverted"] and inv[20, 20] > inv[20, 3]


def test_a_split_may_be_absent(vindr_copy):
    shutil.rmtree(vindr_copy / "test_images")
    recs = load_vindr(str(vindr_copy))
    assert {r["origin_split"] for r in recs} == {"training"} and len(recs) == 3


@pytest.mark.parametrize("breakage, message", [
    ("no_annotations", "no annotations/ folder"),
    ("no_splits", "neither train_images/"),
    ("missing_column", "missing columns ['lesion_type']"),
    ("implant_without_box", "Surgical implant row has no box"),
    ("bad_number", "not numbers"),
    ("broken_dicom", "b1osteo.dicom: not a readable"),
])
def test_bad_layouts_are_refused(vindr_copy, breakage, message):
    train_csv = vindr_copy / "annotations" / "train.csv"
    text = train_csv.read_text()
    if breakage == "no_annotations":
        shutil.rmtree(vindr_copy / "annotations")
    elif breakage == "no_splits":
        shutil.rmtree(vindr_copy / "train_images")
        shutil.rmtree(vindr_copy / "test_images")
    elif breakage == "missing_column":
        train_csv.write_text(text.replace("lesion_type", "finding"))
    elif breakage == "implant_without_box":
        train_csv.write_text(text.replace("Surgical implant,12,30,28,44", "Surgical implant,,,,"))
    elif breakage == "bad_number":
        train_csv.write_text(text.replace("Surgical implant,12,30", "Surgical implant,twelve,30"))
    elif breakage == "broken_dicom":
        (vindr_copy / "train_images" / "b1osteo.dicom").write_bytes(b"not a dicom at all")
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_vindr(str(vindr_copy))


def test_missing_path_argument():
    with pytest.raises(SpecError, match="needs the VinDr-SpineXR folder"):
        load_vindr(None)
