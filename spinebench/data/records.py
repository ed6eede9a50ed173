"""The record: one image as every data source describes it, and the manifest CSV that stores records.

A record is a plain dict (torchxrayvision style), the same for every source::

    image_id    str    unique within the loaded data ("aasce/sunhl-1th-01-Mar-2017-162 A AP")
    patient_id  str    patient key, prefixed by source ("aasce/162"); splits never cut a patient
    source      str    "aasce", "vindr", "folder", "coco", "synth", "hybrid"
    path        str    absolute path of the image file (PNG/JPEG/TIFF/DICOM)
    split       str    "train" | "val" | "test" | "" (not yet assigned)
    origin_split str   the split the source itself distributed the image in ("training", "test", ""), kept
                       for ``--split official``; never used by the default patient-level split
    implant     int    0/1  finding `Lum` (label 1)
    scoliosis   int    0/1  finding `sco` (label 2)
    cobb_pt, cobb_mt, cobb_tl   float  AASCE Cobb angles in degrees, NaN where unknown
    boxes       list   [[x0, y0, x1, y1, label], ...] in pixels of the image file, label 1=Lum, 2=sco
    landmarks   list | None   68 [x, y] vertebra corners T1..L5 in AASCE order (pixels), or None
    width, height int  image size in pixels (0 where unknown until loaded)

``boxes`` and ``landmarks`` are stored as JSON strings in the manifest CSV so that one flat file carries
everything a run needs.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from spinebench import FINDING_LABELS, FINDINGS
from spinebench.errors import SpecError

MANIFEST_COLUMNS = (
    "image_id", "patient_id", "source", "path", "split", "origin_split", "implant", "scoliosis",
    "cobb_pt", "cobb_mt", "cobb_tl", "width", "height", "boxes", "landmarks",
)


def boxes_cover_findings(findings: Sequence[float], box_labels: Iterable[int]) -> bool:
    """True when every positive finding of an image (values in FINDINGS order) has a box of its class.

    Why: detectors learn only from boxes. An image labelled implant-positive without a ``Lum`` box (the AASCE
    post-operative films, or a folder labelled per image) would teach a detector that the hardware is background,
    and would turn a correct detection into a false positive in mAP; such images train and score the detectors'
    boxes only when their boxes are complete (the image-level protocol still scores every image).
    """
    have = {int(v) for v in box_labels}
    return all(not int(v) or FINDING_LABELS[name] in have for name, v in zip(FINDINGS, findings))


def make_record(**fields: Any) -> dict:
    """Return a record with every column present (defaults for the missing ones)."""
    rec = {
        "image_id": "", "patient_id": "", "source": "", "path": "", "split": "", "origin_split": "",
        "implant": 0, "scoliosis": 0, "cobb_pt": math.nan, "cobb_mt": math.nan, "cobb_tl": math.nan,
        "width": 0, "height": 0, "boxes": [], "landmarks": None,
    }
    unknown = set(fields) - set(rec)
    if unknown:
        raise TypeError(f"unknown record fields: {sorted(unknown)}")
    rec.update(fields)
    return rec


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def write_manifest(records: Iterable[dict], path: str | os.PathLike) -> Path:
    """Write records as a manifest CSV atomically (a temp file renamed), so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for rec in records:
            writer.writerow({k: _fmt(rec.get(k)) for k in MANIFEST_COLUMNS})
    os.replace(tmp, path)
    return path


def read_manifest(path: str | os.PathLike) -> list[dict]:
    """Read a manifest CSV back into records; relative image paths are taken relative to the CSV."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"manifest not found: {path}")
    base = path.parent
    out = []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"image_id", "path"} - set(reader.fieldnames or [])
        if missing:
            raise SpecError(f"{path}: not a spinebench manifest (missing columns {sorted(missing)})")
        for row in reader:
            rec = make_record()
            for k in MANIFEST_COLUMNS:
                v = row.get(k, "")
                if v is None:
                    v = ""
                if k in ("implant", "scoliosis", "width", "height"):
                    rec[k] = int(float(v)) if v else 0
                elif k.startswith("cobb_"):
                    rec[k] = float(v) if v else math.nan
                elif k == "boxes":
                    rec[k] = json.loads(v) if v else []
                elif k == "landmarks":
                    rec[k] = json.loads(v) if v else None
                else:
                    rec[k] = v
            p = Path(rec["path"])
            rec["path"] = str(p if p.is_absolute() else (base / p).resolve())
            out.append(rec)
    return out
