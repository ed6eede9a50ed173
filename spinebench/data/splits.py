"""Deterministic, patient-level, stratified train/val/test splits, and the split file every run reads.

Why patient-level: AASCE holds several radiographs per patient and MRI slices of one study are near
duplicates; a split by image leaks patients from train into test and inflates every metric.

How: patients are grouped into strata by their findings (implant, scoliosis: the "worst" over their images);
within a stratum patients are ordered by a seeded hash of their id and cut 70/15/15 (default). The hash makes
the assignment of a patient independent of the order the sources were listed in.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from spinebench.errors import SplitError

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
SPLIT_FILE_COLUMNS = ("image_id", "patient_id", "split")


def _rank(seed: int, patient_id: str) -> str:
    return hashlib.sha256(f"{seed}:{patient_id}".encode()).hexdigest()


def assign_splits(records: list[dict], seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  mode: str = "patient") -> list[dict]:
    """Set ``split`` on every record (in place, and returned).

    mode ``patient``: stratified by patient as above (the default and the honest choice).
    mode ``official``: images a source distributed as its test split (``origin_split == "test"``) stay test;
    the others are split by patient into train/val. AASCE's distributed training and test splits share six
    patients (ids 239-244), so this mode leaks them, as published AASCE numbers do; it is for comparison only.
    """
    if mode not in ("patient", "official"):
        raise SplitError(f"unknown split mode {mode!r}; use 'patient' or 'official'")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise SplitError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    pool = records
    if mode == "official":
        pool = []
        for r in records:
            if r.get("origin_split") == "test":
                r["split"] = "test"
            else:
                pool.append(r)
        tr, va, _ = fractions
        fractions = (tr / (tr + va), va / (tr + va), 0.0)

    by_patient: dict[str, list[dict]] = defaultdict(list)
    for r in pool:
        by_patient[r["patient_id"]].append(r)
    strata: dict[tuple, list[str]] = defaultdict(list)
    for pid, recs in by_patient.items():
        key = (max(int(r["implant"]) for r in recs), max(int(r["scoliosis"]) for r in recs),
               recs[0]["source"])
        strata[key].append(pid)
    for key in sorted(strata):
        pids = sorted(strata[key], key=lambda p: _rank(seed, p))
        n = len(pids)
        n_train = round(n * fractions[0])
        n_val = round(n * (fractions[0] + fractions[1])) - n_train
        for i, pid in enumerate(pids):
            split = "train" if i < n_train else "val" if i < n_train + n_val else "test"
            for r in by_patient[pid]:
                r["split"] = split
    check_splits(records)
    return records


def check_splits(records: list[dict]) -> None:
    """Refuse a split where a patient's images fall into more than one split, or a split is unknown."""
    seen: dict[str, str] = {}
    for r in records:
        s = r.get("split", "")
        if s not in SPLITS:
            raise SplitError(f"image {r['image_id']!r} has no valid split ({s!r})")
        prev = seen.setdefault(r["patient_id"], s)
        if prev != s:
            raise SplitError(f"patient {r['patient_id']!r} crosses splits ({prev} and {s}): "
                             "this would leak a patient between training and evaluation")


def write_split_file(records: list[dict], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SPLIT_FILE_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in sorted(records, key=lambda r: r["image_id"]):
            w.writerow({k: r[k] for k in SPLIT_FILE_COLUMNS})
    os.replace(tmp, path)
    return path


def apply_split_file(records: list[dict], path: str | os.PathLike) -> list[dict]:
    """Set splits from a split file written earlier, so every model and every later run uses the same cut."""
    path = Path(path)
    if not path.is_file():
        raise SplitError(f"split file not found: {path}")
    with open(path, newline="") as f:
        table = {row["image_id"]: row["split"] for row in csv.DictReader(f)}
    missing = [r["image_id"] for r in records if r["image_id"] not in table]
    if missing:
        raise SplitError(f"{len(missing)} images are not in split file {path} (e.g. {missing[0]!r})")
    for r in records:
        r["split"] = table[r["image_id"]]
    check_splits(records)
    return records


def split_counts(records: list[dict]) -> dict[str, int]:
    out = {s: 0 for s in SPLITS}
    for r in records:
        if r.get("split") in out:
            out[r["split"]] += 1
    return out
