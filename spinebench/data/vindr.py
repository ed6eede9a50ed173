"""VinDr-SpineXR (PhysioNet ``vindr-spinexr`` 1.0.0): spine radiographs with lesion boxes (``vindr=PATH``).

Pham, Nguyen Trung, Nguyen, "VinDr-SpineXR: A large annotated medical image dataset for spinal lesions detection
and classification from radiographs" (version 1.0.0), PhysioNet, 2021, https://doi.org/10.13026/q45h-5h59; and
Nguyen et al., MICCAI 2021. PhysioNet Credentialed Health Data License 1.5.0: never commit any of it, never share
the images. 10,466 DICOM images from 5,000 studies, 13 lesion types boxed by radiologists.

Layout, as distributed (PATH is the ``1.0.0`` folder)::

    train_images/<image_id>.dicom      4,000 studies         -> origin_split "training"
    test_images/<image_id>.dicom       1,000 studies         -> origin_split "test"
    annotations/train.csv, test.csv    one row per box: study_id, series_id, image_id, rad_id, lesion_type,
                                       xmin, ymin, xmax, ymax (pixels); an image without lesions has one row
                                       with lesion_type "No finding" and empty coordinates

Either split may be absent. An image is read when it is both in a csv and on disk; the image size comes from the
DICOM header (``Rows``/``Columns``, read without the pixel data).

Mapping to spinebench's two findings:

* ``Surgical implant`` rows -> a ``Lum`` box (label 1) each, and ``implant`` = 1.
* ``No finding`` -> a normal image (``implant`` = ``scoliosis`` = 0).
* Every other lesion type (osteophytes, disc space narrowing, foraminal stenosis, spondylolisthesis, vertebral
  collapse, fractures, other lesions...) is neither of our findings: it does not make an image positive and its
  box is dropped. Such images count as negatives here, although they are not normal spines.
* VinDr-SpineXR has no scoliosis label, so ``scoliosis`` is 0 for every image. That is "not annotated", not
  "absent": a scoliotic VinDr image is a false negative label. Use VinDr for the implant finding.

Leakage: the DICOMs carry no usable patient identity (de-identified), and ``study_id`` is the finest grouping the
release gives: one study is one patient's examination, whose AP and lateral views (and repeated series) are
near-duplicates of one patient. ``patient_id`` is therefore ``vindr/<study_id>``, so a patient-level split keeps a
study's images together. Studies of the same patient on different dates cannot be linked.
"""

from __future__ import annotations

import csv
import logging
import math
from collections import defaultdict
from pathlib import Path

from spinebench import LABEL_MAP
from spinebench.data.folder import image_size
from spinebench.data.records import make_record
from spinebench.data.sources import register_source
from spinebench.errors import SpecError

log = logging.getLogger(__name__)

#: (images folder, annotations csv, origin_split)
SPLITS = (("train_images", "train.csv", "training"), ("test_images", "test.csv", "test"))
REQUIRED_COLUMNS = ("study_id", "image_id", "lesion_type", "xmin", "ymin", "xmax", "ymax")
IMPLANT_LESION = "surgical implant"
NO_FINDING = "no finding"
IMAGE_SUFFIX = ".dicom"


def _coord(value: str) -> float:
    value = (value or "").strip()
    return float(value) if value else math.nan


def _read_annotations(csv_path: Path) -> dict[str, dict]:
    """image_id -> {"study_id", "lesions": [(lesion_type, xmin, ymin, xmax, ymax), ...]}."""
    images: dict[str, dict] = {}
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SpecError(f"{csv_path}: not a VinDr-SpineXR annotation file (missing columns {missing})")
        for line, row in enumerate(reader, start=2):
            image_id, study_id = row["image_id"].strip(), row["study_id"].strip()
            if not image_id or not study_id:
                raise SpecError(f"{csv_path}, line {line}: empty image_id or study_id")
            entry = images.setdefault(image_id, {"study_id": study_id, "lesions": []})
            if entry["study_id"] != study_id:
                raise SpecError(f"{csv_path}, line {line}: image {image_id} listed under two studies")
            try:
                box = tuple(_coord(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            except ValueError:
                raise SpecError(f"{csv_path}, line {line}: box coordinates are not numbers") from None
            entry["lesions"].append((row["lesion_type"].strip(), *box))
    return images


def _implant_boxes(lesions: list[tuple], width: int, height: int, where: str) -> list[list]:
    """``Lum`` boxes of the Surgical implant rows, clipped to the image, duplicates dropped."""
    boxes: list[list] = []
    for lesion, x0, y0, x1, y1 in lesions:
        if lesion.lower() != IMPLANT_LESION:
            continue
        if any(math.isnan(v) for v in (x0, y0, x1, y1)):
            raise SpecError(f"{where}: a Surgical implant row has no box coordinates")
        box = [round(max(0.0, min(x0, x1)), 1), round(max(0.0, min(y0, y1)), 1),
               round(min(float(width), max(x0, x1)), 1), round(min(float(height), max(y0, y1)), 1),
               LABEL_MAP["Lum"]]
        if box[2] <= box[0] or box[3] <= box[1]:
            log.warning("%s: an implant box lies outside the %dx%d image; dropped", where, width, height)
            continue
        if box not in boxes:
            boxes.append(box)
    return boxes


@register_source("vindr")
def load_vindr(arg: str | None) -> list[dict]:
    """Records of every split present under PATH (train_images/ + annotations/train.csv, test_images/ + test.csv)."""
    if not arg:
        raise SpecError("vindr=PATH needs the VinDr-SpineXR folder (holding annotations/ and train_images/)")
    root = Path(arg).expanduser()
    if not (root / "annotations").is_dir():
        raise SpecError(f"vindr={arg}: no annotations/ folder there; expected the VinDr-SpineXR 1.0.0 folder")
    records: list[dict] = []
    found_split = False
    for images_name, csv_name, origin in SPLITS:
        images_dir, csv_path = root / images_name, root / "annotations" / csv_name
        if not (images_dir.is_dir() and csv_path.is_file()):
            continue
        found_split = True
        table = _read_annotations(csv_path)
        missing = 0
        counts: dict[str, int] = defaultdict(int)
        for image_id in sorted(table):
            path = images_dir / f"{image_id}{IMAGE_SUFFIX}"
            if not path.is_file():
                missing += 1
                continue
            entry = table[image_id]
            width, height = image_size(path)
            boxes = _implant_boxes(entry["lesions"], width, height, f"{csv_path} ({image_id})")
            for lesion, *_ in entry["lesions"]:
                counts[lesion] += 1
            records.append(make_record(
                image_id=f"vindr/{image_id}", patient_id=f"vindr/{entry['study_id']}", source="vindr",
                path=str(path.resolve()), origin_split=origin, implant=int(bool(boxes)), scoliosis=0,
                width=width, height=height, boxes=boxes,
            ))
        if missing:
            log.warning("VinDr %s: %d images of %s are not in %s/; skipped", origin, missing, csv_name, images_name)
        log.debug("VinDr %s lesion rows: %s", origin, dict(counts))
    if not found_split:
        raise SpecError(f"vindr={arg}: neither train_images/ + annotations/train.csv nor test_images/ + "
                        "annotations/test.csv is there")
    if not records:
        raise SpecError(f"vindr={arg}: none of the annotated images is on disk")
    return records
