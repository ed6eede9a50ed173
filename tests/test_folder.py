"""The user's own data: labels CSV (folder=) and COCO-JSON (coco=), on tests/fixtures/folder_mini."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from spinebench.data.folder import image_size, load_coco, load_folder
from spinebench.data.sources import load_records
from spinebench.errors import SpecError

FIXTURES = Path(__file__).parent / "fixtures"
MINI = FIXTURES / "folder_mini"
VINDR_DICOM = FIXTURES / "vindr_mini" / "train_images" / "a1implant.dicom"


@pytest.fixture
def mini(tmp_path):
    dst = tmp_path / "mini"
    shutil.copytree(MINI, dst)
    return dst


def _by_stem(records):
    return {Path(r["path"]).stem: r for r in records}


def test_folder_csv_records():
    recs = _by_stem(load_records(f"folder={MINI}"))
    assert sorted(recs) == ["p01_normal", "p02_implant", "p03_scoliosis"]
    normal, implant, sco = recs["p01_normal"], recs["p02_implant"], recs["p03_scoliosis"]
    assert normal["image_id"] == "folder/images/p01_normal"
    assert normal["patient_id"] == "folder/p01_normal"  # no patient_id given: the file stem
    assert (normal["implant"], normal["scoliosis"], normal["boxes"]) == (0, 0, [])
    assert implant["patient_id"] == "folder/patient2" and implant["implant"] == 1
    assert implant["boxes"] == [[10.0, 26.0, 22.0, 38.0, 1]]
    assert sco["scoliosis"] == 1 and sco["boxes"] == [[8.0, 2.0, 26.0, 46.0, 2]]  # "sco" label name accepted
    assert all((r["width"], r["height"], r["source"]) == (32, 48, "folder") for r in recs.values())
    assert all(Path(r["path"]).is_absolute() and Path(r["path"]).is_file() for r in recs.values())
    # the csv file itself names the same data
    assert [r["image_id"] for r in load_folder(str(MINI / "labels.csv"))] == \
        [r["image_id"] for r in load_folder(str(MINI))]


def test_coco_records_match_the_csv():
    recs = _by_stem(load_records(f"coco={MINI / 'coco.json'}"))
    csv_recs = _by_stem(load_folder(str(MINI)))
    assert sorted(recs) == sorted(csv_recs)
    for stem, r in recs.items():
        assert r["source"] == "coco" and r["image_id"].startswith("coco/")
        for key in ("implant", "scoliosis", "boxes", "width", "height", "path"):
            assert r[key] == csv_recs[stem][key], (stem, key)
    assert recs["p02_implant"]["patient_id"] == "coco/patient2"
    assert recs["p01_normal"]["patient_id"] == "coco/p01_normal"


def test_image_size_reads_headers_of_png_and_dicom(tmp_path):
    assert image_size(MINI / "p03_scoliosis.png") == (32, 48)
    # DICOM is recognised by content, whatever the name
    renamed = tmp_path / "scan.bin"
    shutil.copy(VINDR_DICOM, renamed)
    assert image_size(renamed) == (40, 56)
    with pytest.raises(SpecError, match="not found"):
        image_size(tmp_path / "nope.png")


def test_folder_csv_with_a_dicom_and_absolute_path(tmp_path):
    (tmp_path / "labels.csv").write_text(f"path,implant,scoliosis\n{VINDR_DICOM},1,0\n")
    (rec,) = load_folder(str(tmp_path))
    assert (rec["width"], rec["height"], rec["implant"]) == (40, 56, 1)
    assert rec["image_id"] == "folder/a1implant"


CSV_BREAKAGES = [
    ("path,implant\nimages/p01_normal.png,0\n", "missing columns ['scoliosis']"),
    ("path,implant,scoliosis\nimages/nothere.png,0,0\n", "line 2: image not found"),
    ("path,implant,scoliosis\nimages/p01_normal.png,2,0\n", "line 2: implant must be 0 or 1, got '2'"),
    ("path,implant,scoliosis\nimages/p01_normal.png,yes,0\n", "implant must be 0 or 1"),
    ("path,implant,scoliosis,boxes\nimages/p02_implant.png,1,0,[[1,2,3\n", "boxes is not JSON"),
    ('path,implant,scoliosis,boxes\nimages/p02_implant.png,1,0,"[[1,2,3,4]]"\n', "must be [x0, y0, x1, y1, label]"),
    ('path,implant,scoliosis,boxes\nimages/p02_implant.png,1,0,"[[5,5,3,8,1]]"\n', "empty or not finite"),
    ('path,implant,scoliosis,boxes\nimages/p02_implant.png,1,0,"[[5,5,300,8,1]]"\n', "outside the 32x48 image"),
    ('path,implant,scoliosis,boxes\nimages/p02_implant.png,1,0,"[[1,2,3,4,7]]"\n', "box label 7"),
    ('path,implant,scoliosis,boxes\nimages/p02_implant.png,1,0,"[[1,2,3,4,2]]"\n', "labelled 2 but scoliosis is 0"),
    ("path,implant,scoliosis\nimages/p01_normal.png,0,0\nimages/p01_normal.png,0,0\n", "listed twice"),
    ("path,implant,scoliosis\n", "no images listed"),
    ("path,implant,scoliosis\ncoco.json,0,0\n", "coco.json: not a readable image"),
]


@pytest.mark.parametrize("text, message", CSV_BREAKAGES)
def test_bad_csv_is_refused_in_one_line(mini, text, message):
    (mini / "labels.csv").write_text(text)
    with pytest.raises(SpecError) as err:
        load_folder(str(mini))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_folder_paths_refused(tmp_path):
    with pytest.raises(SpecError, match="no labels.csv in that folder"):
        load_folder(str(tmp_path))
    with pytest.raises(SpecError, match="not found"):
        load_folder(str(tmp_path / "x.csv"))
    with pytest.raises(SpecError, match="needs a folder"):
        load_folder(None)


def _coco(mini: Path) -> dict:
    return json.loads((mini / "coco.json").read_text())


def _break_coco(data: dict, breakage: str) -> dict:
    if breakage == "no_known_category":
        data["categories"] = [{"id": 1, "name": "vertebra"}, {"id": 2, "name": "rib"}]
    elif breakage == "unknown_image":
        data["annotations"][0]["image_id"] = 99
    elif breakage == "unknown_category":
        data["annotations"][0]["category_id"] = 42
    elif breakage == "bad_bbox":
        data["annotations"][0]["bbox"] = [1, 2, 3]
    elif breakage == "missing_file":
        data["images"][0]["file_name"] = "images/gone.png"
    elif breakage == "no_images_key":
        del data["images"]
    elif breakage == "duplicate_id":
        data["images"][1]["id"] = 1
    return data


@pytest.mark.parametrize("breakage, message", [
    ("no_known_category", "no category is named Lum"),
    ("unknown_image", "annotations[0]: image_id 99 is not in images"),
    ("unknown_category", "category_id 42 is not in categories"),
    ("bad_bbox", "bbox must be [x, y, width, height]"),
    ("missing_file", "images[0]: image not found"),
    ("no_images_key", "missing 'images'"),
    ("duplicate_id", "image id 1 appears twice"),
])
def test_bad_coco_is_refused_in_one_line(mini, breakage, message):
    (mini / "coco.json").write_text(json.dumps(_break_coco(_coco(mini), breakage)))
    with pytest.raises(SpecError) as err:
        load_coco(str(mini / "coco.json"))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_coco_category_names_and_non_json(mini):
    data = _coco(mini)
    data["categories"] = [{"id": 1, "name": "Surgical Implant"}, {"id": 2, "name": "SCOLIOSIS"}]
    (mini / "coco.json").write_text(json.dumps(data))
    recs = _by_stem(load_coco(str(mini / "coco.json")))
    assert recs["p02_implant"]["implant"] == 1 and recs["p03_scoliosis"]["scoliosis"] == 1
    (mini / "coco.json").write_text("{not json")
    with pytest.raises(SpecError, match="not a JSON file"):
        load_coco(str(mini / "coco.json"))
    with pytest.raises(SpecError, match="file not found"):
        load_coco(str(mini / "nothing.json"))
