"""``data inspect``: what a set of records holds, per source, split and finding, before anything is trained on it.

The table answers the questions that decide whether a benchmark means anything: how many positives each split
has for each finding, and how many distinct patients stand behind the images (a split of 70 images from 5
patients is 5 samples, not 70). ``normal`` means neither finding: a VinDr image with only other lesions
counts there (see :mod:`spinebench.data.vindr`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable

from spinebench.cobb import SEVERITY_GRADES, severity_grade
from spinebench.data.splits import SPLITS

FINDING_COLUMNS = ("normal", "implant", "scoliosis", "both")
SEVERITY_COLUMNS = SEVERITY_GRADES
ALL = "all"


def finding_of(record: dict) -> str:
    """The record's finding class: normal, implant, scoliosis or both."""
    implant, scoliosis = int(record["implant"]), int(record["scoliosis"])
    return ("normal", "implant", "scoliosis", "both")[implant + 2 * scoliosis]


def _largest_cobb(record: dict) -> float:
    angles = [float(record.get(k, math.nan)) for k in ("cobb_pt", "cobb_mt", "cobb_tl")]
    angles = [a for a in angles if not math.isnan(a)]
    return max(angles) if angles else math.nan


def _table(header: list[str], rows: list[list], n_left: int = 2) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for k, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i < n_left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def summarize(records: Iterable[dict]) -> str:
    """A text table: images, patients and finding counts per source x split, with totals; plus Cobb severity
    bands where the records carry Cobb angles."""
    records = list(records)
    if not records:
        return "no images"
    splits = [s for s in SPLITS if any(r.get("split") == s for r in records)]
    if any(r.get("split", "") not in SPLITS for r in records):
        splits.append("-")  # not assigned yet
    sources = sorted({r["source"] for r in records})

    def key_split(r: dict) -> str:
        return r.get("split") if r.get("split") in SPLITS else "-"

    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        for src in (r["source"], ALL):
            for split in (key_split(r), ALL):
                groups[(src, split)].append(r)

    row_sources = sources + ([ALL] if len(sources) > 1 else [])
    row_splits = splits + ([ALL] if len(splits) > 1 else [])
    rows = []
    for src in row_sources:
        for split in row_splits:
            recs = groups.get((src, split), [])
            if not recs:
                continue
            counts = {c: 0 for c in FINDING_COLUMNS}
            for r in recs:
                counts[finding_of(r)] += 1
            rows.append([src, split, len(recs), len({r["patient_id"] for r in recs}),
                         *(counts[c] for c in FINDING_COLUMNS)])
    out = [_table(["source", "split", "images", "patients", *FINDING_COLUMNS], rows)]

    with_cobb = [r for r in records if not math.isnan(_largest_cobb(r))]
    if with_cobb:
        sev_rows = []
        for split in row_splits:
            recs = [r for r in with_cobb if split == ALL or key_split(r) == split]
            if not recs:
                continue
            counts = {c: 0 for c in SEVERITY_COLUMNS}
            for r in recs:
                counts[severity_grade(_largest_cobb(r))] += 1
            sev_rows.append([split, len(recs), *(counts[c] for c in SEVERITY_COLUMNS)])
        out.append("")
        out.append("largest Cobb angle (images that have one): none <10, mild 10-25, moderate 25-40, "
                   "severe >=40 degrees")
        out.append(_table(["split", "images", *SEVERITY_COLUMNS], sev_rows, n_left=1))
    return "\n".join(out)
