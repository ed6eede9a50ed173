"""The one row schema for every result (leaderboard, ``evaluate``, figures, demo) and safe ways to write it.

A row is a flat dict with exactly :data:`RESULT_COLUMNS`: run context first, then the image-level metrics of
:func:`spinebench.evaluation.metrics.evaluate_image_level`, the detection metrics (empty for classifiers) and
the Cobb-angle metrics (empty until a Cobb model fills them). Rows are appended with ``csv.DictWriter`` in that
fixed order, as timm's benchmark scripts do, and a model that fails becomes an ``error`` row instead of
ending the run.

Every write goes to a temporary file that then replaces the target (``os.replace``), so an interrupted run never
leaves a half-written leaderboard, and a file with another header is moved aside, never overwritten.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import io
import json
import logging
import math
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from spinebench import FINDINGS
from spinebench.errors import SpinebenchError
from spinebench.evaluation.detection import DETECTION_KEYS
from spinebench.evaluation.metrics import IMAGE_LEVEL_KEYS

log = logging.getLogger(__name__)

#: Who/what/where of a row: free text, never parsed as numbers by :func:`read_rows`.
TEXT_COLUMNS = ("run_id", "timestamp", "model", "task", "paper_name", "data", "split_file", "pretrained_mode",
                "device", "precision", "input_size", "git_commit", "status", "error")
CONTEXT_COLUMNS = (
    "run_id", "timestamp", "model", "task", "paper_name", "data", "split_file", "n_train", "n_val", "n_test",
    "seed", "pretrained", "pretrained_mode", "device", "precision", "epochs", "input_size", "params_m",
    "train_seconds", "latency_ms", "git_commit", "status", "error",
)
#: Cobb-angle regression metrics (SMAPE in %, mean absolute errors in degrees), with CI bounds;
#: ``smape_real``: the SMAPE of the split's real radiographs alone (every source but ``synth``; empty without any)
COBB_KEYS = tuple(k for name in ("smape", "smape_real", "mae_pt", "mae_mt", "mae_tl", "mae_largest", "landmark_mpe_px",
                                  "landmark_mpe_px_orig", "grade_accuracy")
                  for k in (name, f"{name}_lo", f"{name}_hi"))
#: The stable, ordered column set of every result row and leaderboard CSV.
RESULT_COLUMNS: tuple[str, ...] = CONTEXT_COLUMNS + IMAGE_LEVEL_KEYS + DETECTION_KEYS + COBB_KEYS
assert len(set(RESULT_COLUMNS)) == len(RESULT_COLUMNS), "duplicate result column"

_MAX_ERROR_CHARS = 500

# ---------------------------------------------------------------------------------------- run-folder files
# Declared once: the runner's task objects write these files and ``spinebench.figures`` reads them.
#: Columns of an image-level model's test predictions, ``predictions/<model>-s<seed>.csv``.
PREDICTION_COLUMNS = ("image_id", "patient_id", *(f"{k}_{f}" for f in FINDINGS for k in ("true", "prob", "pred")))
#: Columns of a Cobb model's test predictions, ``predictions/<model>-s<seed>-cobb.csv``: one row per test image,
#: angles in degrees (NaN/empty where unknown), as :mod:`spinebench.cobb` computes them.
COBB_PREDICTION_COLUMNS = ("image_id", "patient_id", "true_pt", "true_mt", "true_tl", "pred_pt", "pred_mt",
                           "pred_tl")
#: Columns every training log ``logs/<model>-s<seed>.csv`` has (one row per epoch; ``images``, ``lr``, ``seconds``,
#: the task's validation keys such as ``val_loss`` or ``val_smape``, and ``train_<part>`` losses beside them).
LOG_COLUMNS = ("epoch", "train_loss")


def make_row(**fields: Any) -> dict:
    """A result row: every column present ("" where not given); unknown keys are refused (a typo would
    otherwise silently drop a metric). ``timestamp`` defaults to now (UTC)."""
    unknown = [k for k in fields if k not in RESULT_COLUMNS]
    if unknown:
        raise KeyError(f"unknown result column(s): {', '.join(sorted(unknown))}")
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row["timestamp"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    row.update({k: _plain(v) for k, v in fields.items()})
    return row


def error_row(model: str, err: BaseException | str, **context: Any) -> dict:
    """The row of a model that failed: status "error" and the error on one line, with whatever context is known."""
    msg = f"{type(err).__name__}: {err}" if isinstance(err, BaseException) else str(err)
    msg = " ".join(msg.split())[:_MAX_ERROR_CHARS]
    for key in ("task", "paper_name"):
        if key not in context:
            with contextlib.suppress(Exception):  # the model may be unknown: the row must still be written
                from spinebench.models import model_info
                context[key] = model_info(model).get(key, "")
    return make_row(**{**context, "model": model, "status": "error", "error": msg})


def _plain(v: Any) -> Any:
    """numpy scalars -> Python numbers, so rows serialise the same to CSV and JSON."""
    if isinstance(v, np.generic):
        return v.item()
    return v


# ---------------------------------------------------------------------------------------------------- CSV
@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of one file between processes (parallel runs, DDP ranks); no-op off POSIX."""
    try:
        import fcntl
    except ImportError:  # Windows: atomic replace still protects the file's integrity
        yield
        return
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _backup_name(path: Path) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    bak = path.with_name(f"{path.name}.{stamp}.bak")
    n = 1
    while bak.exists():
        bak = path.with_name(f"{path.name}.{stamp}-{n}.bak")
        n += 1
    return bak


def _csv_cell(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return v


def append_csv_row(path: str | os.PathLike, row: Mapping, columns: Sequence[str] | None = None) -> Path:
    """Append one row to a plain CSV log (a header first when the file is new); ``columns`` default to the row's
    keys, extra keys are dropped. For per-epoch logs and benchmark CSVs; result rows go through :func:`append_rows`.

    A row whose columns the file's header lacks (a training log whose last epoch alone was validated:
    ``val_every=0``; a benchmark that gained columns since the file was written) rewrites the file with those
    columns added (earlier rows left empty there), instead of writing values under the wrong names; an existing
    file's own column order is kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(columns or row)
    if path.exists():
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])  # one line per append: the rows are read only to add columns
        # (a column the row has no value for needs no new header)
        missing = [k for k in fields if k not in header and (columns is None or k in row)]
        if header and missing:
            with open(path, newline="") as f:
                old = list(csv.DictReader(f))
            fields = header + missing
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(old)
            os.replace(tmp, path)
        elif header:
            fields = header
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)
    return path


def append_rows(path: str | os.PathLike, rows: Iterable[Mapping]) -> Path:
    """Append result rows to a CSV with :data:`RESULT_COLUMNS` (created with its header if missing).

    A file whose header differs (an older schema, another tool's CSV) is moved aside to
    ``<name>.<timestamp>.bak`` with a warning and a new file is started: old results are kept, never mixed
    into the wrong columns. The file is rewritten through a temporary file, so it is whole at every moment.
    """
    path = Path(path)
    rows = [make_row(**dict(r)) for r in rows]  # validates keys, fills missing columns
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        existing = ""
        if path.is_file() and path.stat().st_size > 0:
            existing = path.read_text(encoding="utf-8")
            header = next(csv.reader([existing.splitlines()[0]]), []) if existing.strip() else []
            if tuple(header) != RESULT_COLUMNS:
                bak = _backup_name(path)
                os.replace(path, bak)
                log.warning("%s has a different header (%d columns, expected %d): moved it to %s and started a "
                            "new file", path, len(header), len(RESULT_COLUMNS), bak)
                existing = ""
        buf = io.StringIO()
        if existing:
            buf.write(existing if existing.endswith("\n") else existing + "\n")
        writer = csv.DictWriter(buf, fieldnames=RESULT_COLUMNS, lineterminator="\n")
        if not existing:
            writer.writeheader()
        writer.writerows({k: _csv_cell(v) for k, v in r.items()} for r in rows)
        _atomic_write_text(path, buf.getvalue())
    return path


def _parse(value: str) -> Any:
    if value == "":
        return ""
    if value in ("True", "False"):
        return value == "True"
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def read_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a results CSV as dicts: numbers as int/float ("nan" -> NaN), True/False as bool, "" kept as ""
    (not recorded); the text columns (run id, model, git commit...) stay strings."""
    path = Path(path)
    if not path.is_file():
        raise SpinebenchError(f"results file not found: {path}")
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: (v if k in TEXT_COLUMNS or v is None else _parse(v)) for k, v in r.items()}
                for r in csv.DictReader(f)]


# --------------------------------------------------------------------------------------------------- other
def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist"):  # torch tensors, without importing torch
        return obj.tolist()
    return str(obj)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (numpy values and paths converted)."""
    path = Path(path)
    _atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")
    return path


def git_commit() -> str:
    """Short commit hash of the spinebench checkout, or "unknown" (installed package, no git, any failure)."""
    package = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel", "--short", "HEAD"], cwd=package,
                             capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    lines = out.stdout.split()
    # an installed copy inside some other repository (a venv in a project) must not report that repo's commit
    if len(lines) != 2 or Path(lines[0]).resolve() / "spinebench" != package:
        return "unknown"
    return lines[1]
