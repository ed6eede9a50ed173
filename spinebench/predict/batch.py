"""Several files through the predictor into one CSV: one row per (file, model); an unreadable file is one row."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from spinebench import FINDINGS
from spinebench.errors import SpinebenchError

if TYPE_CHECKING:
    from spinebench.predict.predictor import Predictor

BATCH_COLUMNS = ["index", "file", "model", "task", "implant_probability", "implant_threshold", "implant_positive",
                 "scoliosis_probability", "scoliosis_threshold", "scoliosis_positive", "boxes", "cobb_largest",
                 "cobb_grade", "ms", "error"]


def batch_rows(predictor: "Predictor", files: Iterable, names: Iterable[str] | None = None) -> list[dict]:
    """One row per (file, model) for several files; an unreadable file becomes one ``error`` row."""
    rows = []
    files = list(files)
    names = list(names) if names is not None else [Path(str(f)).name for f in files]
    for i, (src, name) in enumerate(zip(files, names)):
        try:
            a = predictor.analyze(src, draw=False)
        except SpinebenchError as e:
            rows.append(dict.fromkeys(BATCH_COLUMNS, "") | {"index": i, "file": name, "error": _strip_path(str(e))})
            continue
        for model, r in a.result["models"].items():
            row = dict.fromkeys(BATCH_COLUMNS, "") | {"index": i, "file": name, "model": model, "task": r["task"],
                                                      "ms": r.get("ms", ""), "error": r.get("error", "")}
            for f in FINDINGS:
                if isinstance(r.get(f), dict):
                    row[f"{f}_probability"] = r[f]["probability"]
                    row[f"{f}_threshold"] = r[f]["threshold"]
                    row[f"{f}_positive"] = int(r[f]["positive"])
            if "boxes" in r:
                row["boxes"] = len(r["boxes"])
            if "largest" in r:
                row["cobb_largest"], row["cobb_grade"] = r["largest"], r["grade"]
            rows.append(row)
        a.release()
    return rows


def write_batch_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=BATCH_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


def _strip_path(msg: str) -> str:
    """Error lines name the file by its path; an upload's temporary path says nothing useful to a visitor."""
    return re.sub(r"^\S*[/\\]\S*?:\s", "", msg)


def user_message(err: BaseException) -> str:
    """The one line a visitor sees for a problem with their upload (no temporary paths)."""
    return _strip_path(str(err))

