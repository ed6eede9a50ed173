"""Your own data: a labels CSV (``folder=PATH``) or a COCO-JSON detection file (``coco=FILE``).

``folder=PATH``: PATH is a folder holding ``labels.csv``, or the path of any ``.csv`` file. One row per image::

    path,implant,scoliosis,patient_id,boxes
    images/p001_ap.png,1,0,p001,"[[120,340,260,520,1]]"
    images/p001_lat.dcm,1,0,p001,
    images/p002.jpg,0,1,,"[[80,150,400,900,""sco""]]"
    p003.tif,0,0,,

* ``path`` (required): the image (PNG, JPEG, TIFF or DICOM), relative to the CSV's folder or absolute.
* ``implant``, ``scoliosis`` (required): 0 or 1, the two findings (``Lum`` and ``sco``); both 0 = normal.
* ``patient_id`` (optional): images of one patient must share it, so that no patient is cut across splits.
  Empty or absent: the image's file stem, i.e. every image is its own patient; give it whenever a patient has
  several images (views, follow-ups, slices), or the test set leaks.
* ``boxes`` (optional): JSON list of ``[x0, y0, x1, y1, label]`` in pixels of the image file, label 1 / ``"Lum"``
  (implant) or 2 / ``"sco"`` (scoliosis). A box must agree with the row's findings (a ``Lum`` box needs
  ``implant`` = 1); a finding may come without a box (classification only).

``coco=FILE``: a COCO detection file (``images``, ``annotations``, ``categories``). ``file_name`` is relative to the
JSON's folder; ``bbox`` is ``[x, y, width, height]``. Categories named ``Lum``, ``implant`` or ``Surgical implant``
are label 1, ``sco`` or ``scoliosis`` label 2 (case-insensitive); other categories are ignored. An image's findings
are the labels of its boxes (no box: normal). ``patient_id`` is the optional image field ``patient_id``, else the
file stem.

Image sizes are read from file headers (no pixel decoding). Any problem in the CSV or JSON (a missing column or
file, a label that is not 0/1, a malformed box) is refused with one line naming the file, and the row where there
is one.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from spinebench import LABEL_MAP
from spinebench.data.records import make_record
from spinebench.data.sources import register_source
from spinebench.errors import SpecError

log = logging.getLogger(__name__)

LABELS_FILE = "labels.csv"
REQUIRED_COLUMNS = ("path", "implant", "scoliosis")
#: COCO category names (lower case) -> spinebench label
COCO_CATEGORY_LABELS = {"lum": 1, "implant": 1, "surgical implant": 1, "sco": 2, "scoliosis": 2}
_FINDING_OF_LABEL = {1: "implant", 2: "scoliosis"}


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of an image file from its header alone: Pillow's lazy open, or the DICOM Rows/Columns.

    Shared by the readers so that listing thousands of images stays fast; DICOM is recognised by content.
    """
    from spinebench.io import is_dicom

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"image not found: {path}")
    if is_dicom(path):
        import pydicom

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
            return int(ds.Columns), int(ds.Rows)
        except Exception as e:  # pydicom raises many kinds for a broken header
            raise SpecError(f"{path}: not a readable DICOM header ({type(e).__name__}: {e})") from None
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception as e:  # PIL.UnidentifiedImageError, OSError, DecompressionBombError...
        raise SpecError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None


def _label(value: Any, where: str) -> int:
    if isinstance(value, str):
        key = value.strip()
        if key in LABEL_MAP:
            return LABEL_MAP[key]
        try:
            value = float(key)
        except ValueError:
            raise SpecError(f"{where}: box label {value!r} is not 1/'Lum' or 2/'sco'") from None
    if isinstance(value, (int, float)) and value in (1, 2):
        return int(value)
    raise SpecError(f"{where}: box label {value!r} is not 1/'Lum' or 2/'sco'")


def _box(values: Any, width: int, height: int, where: str) -> list:
    """A validated [x0, y0, x1, y1, label] box; coordinates may overshoot the image by a pixel (rounding)."""
    if not isinstance(values, (list, tuple)) or len(values) != 5:
        raise SpecError(f"{where}: a box must be [x0, y0, x1, y1, label], got {values!r}")
    try:
        x0, y0, x1, y1 = (float(v) for v in values[:4])
    except (TypeError, ValueError):
        raise SpecError(f"{where}: box coordinates are not numbers: {values!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        raise SpecError(f"{where}: box {values!r} is empty or not finite (need x0 < x1 and y0 < y1)")
    if x0 < -1 or y0 < -1 or x1 > width + 1 or y1 > height + 1:
        raise SpecError(f"{where}: box {values!r} lies outside the {width}x{height} image")
    return [max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)), _label(values[4], where)]


def _flag(value: str | None, column: str, where: str) -> int:
    v = (value or "").strip()
    if v in ("0", "1"):
        return int(v)
    raise SpecError(f"{where}: {column} must be 0 or 1, got {v!r}")


def _resolve(base: Path, rel: str, where: str) -> Path:
    if not rel:
        raise SpecError(f"{where}: empty path")
    p = Path(rel).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.is_file():
        raise SpecError(f"{where}: image not found: {p}")
    return p.resolve()


def _image_key(path: Path, base: Path) -> str:
    """An id that stays unique within one CSV: the path relative to the CSV's folder, without suffix."""
    try:
        rel = path.relative_to(base.resolve())
    except ValueError:
        rel = Path(path.name)
    return rel.with_suffix("").as_posix()


@register_source("folder")
def load_folder(arg: str | None) -> list[dict]:
    """Records of a labels CSV (PATH/labels.csv, or PATH itself when it is a .csv file)."""
    if not arg:
        raise SpecError("folder=PATH needs a folder holding labels.csv, or a .csv file")
    path = Path(arg).expanduser()
    csv_path = path / LABELS_FILE if path.is_dir() else path
    if not csv_path.is_file():
        raise SpecError(f"folder={arg}: {'no ' + LABELS_FILE + ' in that folder' if path.is_dir() else 'not found'}")
    base = csv_path.parent
    records: list[dict] = []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise SpecError(f"{csv_path}: missing columns {missing} (need path, implant, scoliosis)")
            for line, raw in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "") for k, v in raw.items()}
                where = f"{csv_path}, line {line}"
                img = _resolve(base, row["path"].strip(), where)
                implant, scoliosis = _flag(row["implant"], "implant", where), _flag(row["scoliosis"], "scoliosis", where)
                width, height = image_size(img)
                boxes = []
                if row.get("boxes", "").strip():
                    try:
                        parsed = json.loads(row["boxes"])
                    except json.JSONDecodeError as e:
                        raise SpecError(f"{where}: boxes is not JSON ({e.msg})") from None
                    if not isinstance(parsed, list):
                        raise SpecError(f"{where}: boxes must be a JSON list of [x0, y0, x1, y1, label]")
                    boxes = [_box(b, width, height, where) for b in parsed]
                for b in boxes:
                    finding = _FINDING_OF_LABEL[b[4]]
                    if not {"implant": implant, "scoliosis": scoliosis}[finding]:
                        raise SpecError(f"{where}: a box labelled {b[4]} but {finding} is 0")
                patient = row.get("patient_id", "").strip() or img.stem
                records.append(make_record(
                    image_id=f"folder/{_image_key(img, base)}", patient_id=f"folder/{patient}", source="folder",
                    path=str(img), implant=implant, scoliosis=scoliosis, width=width, height=height, boxes=boxes,
                ))
    except UnicodeDecodeError:
        raise SpecError(f"{csv_path}: not a UTF-8 text CSV") from None
    except csv.Error as e:
        raise SpecError(f"{csv_path}: not a readable CSV ({e})") from None
    if not records:
        raise SpecError(f"{csv_path}: no images listed")
    _check_unique(records, csv_path)
    return records


def _check_unique(records: list[dict], where: Path) -> None:
    seen: set[str] = set()
    for r in records:
        if r["path"] in seen:
            raise SpecError(f"{where}: image {r['path']} is listed twice")
        seen.add(r["path"])


def _require(obj: Any, key: str, kind: type | tuple, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise SpecError(f"{where}: missing {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SpecError(f"{where}: {key!r} has the wrong type ({type(value).__name__})")
    return value


@register_source("coco")
def load_coco(arg: str | None) -> list[dict]:
    """Records of a COCO-JSON detection file whose categories name the two findings."""
    if not arg:
        raise SpecError("coco=FILE needs the path of a COCO-JSON file")
    path = Path(arg).expanduser()
    if not path.is_file():
        raise SpecError(f"coco={arg}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: not a COCO file (the top level is not an object)")
    images = _require(data, "images", list, str(path))
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise SpecError(f"{path}: 'annotations' is not a list")
    categories = _require(data, "categories", list, str(path))

    labels: dict[Any, int] = {}
    ignored = []
    for k, cat in enumerate(categories):
        where = f"{path}, categories[{k}]"
        name = _require(cat, "name", str, where)
        cid = _require(cat, "id", (int, str), where)
        if name.strip().lower() in COCO_CATEGORY_LABELS:
            labels[cid] = COCO_CATEGORY_LABELS[name.strip().lower()]
        else:
            ignored.append(name)
    if not labels:
        raise SpecError(f"{path}: no category is named Lum/implant/Surgical implant or sco/scoliosis "
                        f"(found {[c.get('name') for c in categories if isinstance(c, dict)]})")
    if ignored:
        log.info("%s: categories %s are neither finding; their boxes are ignored", path, ignored)

    base = path.parent
    by_id: dict[Any, dict] = {}
    for k, im in enumerate(images):
        where = f"{path}, images[{k}]"
        iid = _require(im, "id", (int, str), where)
        if iid in by_id:
            raise SpecError(f"{where}: image id {iid!r} appears twice")
        img = _resolve(base, _require(im, "file_name", str, where).strip(), where)
        width, height = image_size(img)
        if ("width" in im and im["width"] != width) or ("height" in im and im["height"] != height):
            log.warning("%s: width/height %sx%s differ from the file's %dx%d; using the file's", where,
                        im.get("width"), im.get("height"), width, height)
        patient = str(im.get("patient_id") or "").strip() or img.stem
        by_id[iid] = make_record(
            image_id=f"coco/{_image_key(img, base)}", patient_id=f"coco/{patient}", source="coco",
            path=str(img), width=width, height=height, boxes=[],
        )
    for k, ann in enumerate(annotations):
        where = f"{path}, annotations[{k}]"
        iid = _require(ann, "image_id", (int, str), where)
        cid = _require(ann, "category_id", (int, str), where)
        if iid not in by_id:
            raise SpecError(f"{where}: image_id {iid!r} is not in images")
        if cid not in labels:
            if not any(isinstance(c, dict) and c.get("id") == cid for c in categories):
                raise SpecError(f"{where}: category_id {cid!r} is not in categories")
            continue
        bbox = _require(ann, "bbox", list, where)
        if len(bbox) != 4:
            raise SpecError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            raise SpecError(f"{where}: bbox coordinates are not numbers: {bbox!r}") from None
        rec = by_id[iid]
        box = _box([x, y, x + w, y + h, labels[cid]], rec["width"], rec["height"], where)
        rec["boxes"].append(box)
        rec[_FINDING_OF_LABEL[box[4]]] = 1
    records = list(by_id.values())
    if not records:
        raise SpecError(f"{path}: no images listed")
    _check_unique(records, path)
    return records
