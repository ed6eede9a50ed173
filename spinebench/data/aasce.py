"""AASCE 2019 / SpineWeb Dataset 16: AP spine radiographs with vertebra corner landmarks (``aasce=PATH``).

Wu et al., "Automatic landmark estimation for adolescent idiopathic scoliosis assessment using BoostNet",
MICCAI 2017; used by the MICCAI 2019 AASCE challenge. Research-use terms: never commit the images or labels.

Layout, as distributed (PATH is the folder holding ``boostnet_labeldata/`` or that folder itself)::

    boostnet_labeldata/data/<split>/*.jpg
    boostnet_labeldata/labels/<split>/<image name>.mat      key p2: 68 x 2 corner landmarks in pixels
    boostnet_labeldata/labels/<split>/filenames.csv         image names, the row order of the csv files
    boostnet_labeldata/labels/<split>/landmarks.csv         68 normalised x values, then 68 y values
    boostnet_labeldata/labels/<split>/angles.csv            PT, MT, TL Cobb angles (degrees)

with ``<split>`` = ``training`` and/or ``test``; each split present is read into records with that
``origin_split``. Landmarks come from the ``.mat`` (pixels) when there is one, else from ``landmarks.csv`` scaled
by the image size. The Cobb angles are computed from the landmarks with :func:`spinebench.cobb.cobb_angles`, the
same function that scores models, rather than copied from ``angles.csv`` (they agree to 0.001 degree).

Labels: ``scoliosis`` = 1 when the largest Cobb angle is at least ``SCOLIOSIS_COBB_DEG``, and then one ``sco`` box
(label 2) around the vertebrae of the largest curve. ``implant`` = 0, except for the post-operative films listed in
:data:`POSTOPERATIVE_IMAGES`: the data set's description says it holds no hardware, but these ten training images
show posterior fusion rods and pedicle screws (checked by eye, image by image). They get ``implant`` = 1 and no
``Lum`` box (the data set has no hardware boxes); the hybrid source draws no extra hardware on them.

Leakage: a patient has several radiographs (``...-162 A AP.jpg``, ``...-162 B AP.jpg``: patient 162), so
``patient_id`` is that number; the 481 training images come from about 237 patients. Names without the number
(the ``...-coronalN.jpg`` images) are each their own patient. The distributed training and test splits share a
few patients (ids 239-244): a patient-level split over both keeps them together, ``--split official`` does not.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path

import numpy as np

from spinebench import LABEL_MAP, SCOLIOSIS_COBB_DEG
from spinebench.cobb import cobb_angles, landmarks_from_flat, scoliosis_box
from spinebench.data.folder import image_size
from spinebench.data.records import make_record
from spinebench.data.sources import register_source
from spinebench.errors import SpecError
from spinebench.paths import default_aasce_path

log = logging.getLogger(__name__)

#: Training images (patient number + view letter, as in the file names) that show spinal instrumentation.
POSTOPERATIVE_IMAGES = frozenset({"21 A", "137 D", "140 A", "140 B", "140 C", "141 E", "141 F", "153 C", "158 A",
                                  "159 C"})


def _is_postoperative(stem: str) -> bool:
    m = re.search(r"-(\d+ [A-Z])\s+AP\d*$", stem)
    return bool(m) and m.group(1) in POSTOPERATIVE_IMAGES

ROOT_NAME = "boostnet_labeldata"
SPLITS = ("training", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_PATIENT_RE = re.compile(r"-(\d+)\s+[A-Za-z]\s+AP")


def find_root(path: str | Path) -> Path:
    """The ``boostnet_labeldata`` folder: PATH itself or PATH/boostnet_labeldata."""
    path = Path(path).expanduser()
    for cand in (path / ROOT_NAME, path):
        if (cand / "data").is_dir() and (cand / "labels").is_dir():
            return cand.resolve()
    raise SpecError(f"aasce={path}: no AASCE layout there (expected {ROOT_NAME}/data/ and {ROOT_NAME}/labels/)")


def patient_of(stem: str) -> str:
    """Patient key of an image name: the number before the view letter ("...-162 A AP" -> "162")."""
    m = _PATIENT_RE.search(stem)
    if m:
        return m.group(1)
    log.debug("AASCE image %r has no patient number in its name; it is its own patient", stem)
    return stem


def _read_csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return [row for row in csv.reader(f) if row and any(c.strip() for c in row)]


def _csv_landmarks(labels: Path) -> dict[str, np.ndarray]:
    """Normalised landmark rows of a split, by image name (empty when the csv files are absent)."""
    names_csv, lm_csv = labels / "filenames.csv", labels / "landmarks.csv"
    if not (names_csv.is_file() and lm_csv.is_file()):
        return {}
    names = [r[0].strip() for r in _read_csv_rows(names_csv)]
    rows = _read_csv_rows(lm_csv)
    if len(names) != len(rows):
        raise SpecError(f"{labels}: filenames.csv has {len(names)} rows but landmarks.csv has {len(rows)}")
    try:
        return {n: np.array([float(v) for v in r]) for n, r in zip(names, rows)}
    except ValueError as e:
        raise SpecError(f"{lm_csv}: not a table of numbers ({e})") from None


def _load_split(root: Path, split: str) -> list[dict]:
    import scipy.io

    images_dir, labels = root / "data" / split, root / "labels" / split
    csv_rows = _csv_landmarks(labels)
    records, unlabelled = [], 0
    for img in sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        width, height = image_size(img)
        mat = labels / f"{img.name}.mat"
        if mat.is_file():
            pts = np.asarray(scipy.io.loadmat(mat)["p2"], dtype=np.float64)
        elif img.name in csv_rows:
            pts = landmarks_from_flat(csv_rows[img.name], width, height)
        else:
            unlabelled += 1
            continue
        try:
            res = cobb_angles(pts, image_height=height)
        except ValueError as e:
            raise SpecError(f"{mat if mat.is_file() else labels / 'landmarks.csv'}: bad landmarks for "
                            f"{img.name} ({e})") from None
        scoliotic = res.largest[1] >= SCOLIOSIS_COBB_DEG
        boxes = []
        if scoliotic:
            x0, y0, x1, y1 = scoliosis_box(pts, res)
            boxes = [[round(max(x0, 0.0), 1), round(max(y0, 0.0), 1), round(min(x1, width), 1),
                      round(min(y1, height), 1), LABEL_MAP["sco"]]]
        records.append(make_record(
            image_id=f"aasce/{img.stem}", patient_id=f"aasce/{patient_of(img.stem)}", source="aasce",
            path=str(img.resolve()), origin_split=split, implant=int(_is_postoperative(img.stem)),
            scoliosis=int(scoliotic),
            cobb_pt=round(res.pt, 4), cobb_mt=round(res.mt, 4), cobb_tl=round(res.tl, 4),
            width=width, height=height, boxes=boxes, landmarks=np.round(pts, 3).tolist(),
        ))
    if unlabelled:
        log.warning("AASCE %s: %d images have neither a .mat nor a landmarks.csv row; skipped", split, unlabelled)
    return records


@register_source("aasce")
def load_aasce(arg: str | None) -> list[dict]:
    """Records of every distributed split present under PATH (default: the shared development copy)."""
    root = find_root(arg if arg else default_aasce_path())
    splits = [s for s in SPLITS if (root / "data" / s).is_dir()]
    if not splits:
        raise SpecError(f"aasce={arg or root}: {root}/data/ holds neither {' nor '.join(SPLITS)}/")
    records = []
    for split in splits:
        recs = _load_split(root, split)
        log.info("AASCE %s: %d images", split, len(recs))
        records.extend(recs)
    if not records:
        raise SpecError(f"aasce={arg or root}: no labelled images under {root}/data/")
    return records
