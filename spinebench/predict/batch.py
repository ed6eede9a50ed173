"""Several files through the predictor: expanding folders into image files, one result per file (an unreadable
file is one error entry, the others go on), and one CSV row per (file, model) with the weights' provenance."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from spinebench import FINDINGS
from spinebench.errors import SpinebenchError

if TYPE_CHECKING:
    from spinebench.predict.predictor import Analysis, Predictor

#: Per model: where its answer comes from (``Predictor.provenance``), in every CSV row.
PROVENANCE_COLUMNS = ["spinebench_version", "weights_sha256", "run_id", "data_kind", "pretrained"]
BATCH_COLUMNS = ["index", "file", "model", "task", "implant_probability", "implant_threshold", "implant_positive",
                 "implant_test_auroc", "implant_signal", "scoliosis_probability", "scoliosis_threshold",
                 "scoliosis_positive", "scoliosis_test_auroc", "scoliosis_signal", "boxes", "cobb_largest",
                 "cobb_grade", "ms", *PROVENANCE_COLUMNS, "error"]


def expand_inputs(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given; a folder -> its image files (not recursive, sorted): the suffixes ``load_image`` reads
    (png, jpg, jpeg, tif, tiff, dcm...) and extension-less files that are DICOM by content (first bytes only).
    A path that does not exist, or a folder without images, is a usage error."""
    from spinebench.io import SUPPORTED_EXTENSIONS, is_dicom

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith(".")
                           and (f.suffix.lower() in SUPPORTED_EXTENSIONS or (not f.suffix and is_dicom(f))))
            if not found:
                raise SpinebenchError(f"{p}: no image files in this folder (png, jpg, jpeg, tif, tiff, dcm or "
                                      "extension-less DICOM)")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise SpinebenchError(f"{p}: no such file or folder")
    return list(dict.fromkeys(out))


def analyze_files(predictor: "Predictor", files: Iterable, names: Iterable[str] | None = None, *,
                  draw: bool = False, progress: bool = False
                  ) -> Iterator[tuple[int, str, "Analysis | None", str | None]]:
    """``(index, name, analysis, None)`` per readable file, ``(index, name, None, one-line error)`` per other one;
    a tqdm bar over the files when ``progress``. The caller releases each analysis when done with it."""
    from tqdm.auto import tqdm

    files = list(files)
    names = list(names) if names is not None else [Path(str(f)).name for f in files]
    bar = tqdm(total=len(files), unit="file", desc="predict", disable=not progress, leave=False)
    try:
        for i, (src, name) in enumerate(zip(files, names)):
            try:
                a = predictor.analyze(src, draw=draw)
            except SpinebenchError as e:
                yield i, name, None, _strip_path(str(e), src)
            else:
                yield i, name, a, None
            bar.update(1)
    finally:
        bar.close()


def result_rows(index: int, name: str, result: dict) -> list[dict]:
    """One CSV row per model of one analysis result, with the model's provenance."""
    prov = result.get("provenance") or {}
    rows = []
    for model, r in result["models"].items():
        p = (prov.get("models") or {}).get(model, {})
        row = dict.fromkeys(BATCH_COLUMNS, "") | {
            "index": index, "file": name, "model": model, "task": r["task"], "ms": r.get("ms", ""),
            "error": r.get("error", ""), "spinebench_version": prov.get("spinebench_version", ""),
            "weights_sha256": p.get("weights_sha256", ""), "run_id": p.get("run_id", ""),
            "data_kind": p.get("data_kind", ""), "pretrained": p.get("pretrained", "")}
        for f in FINDINGS:
            if isinstance(r.get(f), dict):
                row[f"{f}_probability"] = r[f]["probability"]
                row[f"{f}_threshold"] = r[f]["threshold"]
                row[f"{f}_positive"] = int(r[f]["positive"])
                for k in ("test_auroc", "signal"):  # predictor.finding_signal; blank where nothing was measured
                    v = r[f].get(k)
                    row[f"{f}_{k}"] = "" if v is None else int(v) if isinstance(v, bool) else v
        if "boxes" in r:
            row["boxes"] = len(r["boxes"])
        if "largest" in r:
            row["cobb_largest"], row["cobb_grade"] = r["largest"], r["grade"]
        rows.append(row)
    return rows


def error_row(index: int, name: str, error: str) -> dict:
    return dict.fromkeys(BATCH_COLUMNS, "") | {"index": index, "file": name, "error": error}


def batch_rows(predictor: "Predictor", files: Iterable, names: Iterable[str] | None = None) -> list[dict]:
    """One row per (file, model) for several files; an unreadable file becomes one ``error`` row."""
    return entries_rows(predict_files(predictor, files, names=names))


def predict_files(predictor: "Predictor", files: Iterable, names: Iterable[str] | None = None, *,
                  progress: bool = False, on_error: Callable[[str, str], None] | None = None,
                  report_dir: str | os.PathLike | None = None) -> list[dict]:
    """Every model on every file: ``{"file", "result"}`` per readable file (``result`` is
    ``Predictor.analyze``'s, provenance included), ``{"file", "error"}`` per other one (``on_error(file, line)`` is
    called as it happens, so a command line can say so at once). ``names``: what to call the files (default:
    their paths as given). ``report_dir``: also one HTML page per readable file there (``"report"``: its path)."""
    from spinebench.predict.report import write_xray_report

    files = [str(f) for f in files]
    out: list[dict] = []
    taken: set[str] = set()
    for _, name, a, err in analyze_files(predictor, files, files if names is None else names, progress=progress,
                                         draw=report_dir is not None):
        if a is None:
            out.append({"file": name, "error": err})
            if on_error is not None:
                on_error(name, err)
            continue
        out.append({"file": name, "result": a.result})
        if report_dir is not None:
            out[-1]["report"] = str(write_xray_report(a.result, a.images, name, report_dir, taken))
        a.release()
    return out


def entries_rows(entries: list[dict]) -> list[dict]:
    """:func:`predict_files`' entries as CSV rows (:data:`BATCH_COLUMNS`)."""
    rows = []
    for i, e in enumerate(entries):
        rows += result_rows(i, e["file"], e["result"]) if "result" in e else [error_row(i, e["file"], e["error"])]
    return rows


def write_batch_csv(rows: list[dict], path: str | os.PathLike) -> Path:
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        write_batch_rows(rows, f)
    return path


def write_batch_rows(rows: list[dict], stream) -> None:
    w = csv.DictWriter(stream, fieldnames=BATCH_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)


def _strip_path(msg: str, src=None) -> str:
    """Error lines name the file by its path; an upload's temporary path says nothing useful to a visitor, and a
    caller that names the file itself (``predict``: "spinebench: NAME: ...") would name it twice."""
    if src is not None and isinstance(src, (str, os.PathLike)) and msg.startswith(f"{src}: "):
        return msg[len(f"{src}: "):]
    return re.sub(r"^\S*[/\\]\S*?:\s", "", msg)


def user_message(err: BaseException) -> str:
    """The one line a visitor sees for a problem with their upload (no temporary paths)."""
    return _strip_path(str(err))

