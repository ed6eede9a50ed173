"""``python -m spinebench predict FILE_OR_DIR...``: every trained model on every file, as the demo runs them.

``spinebench.cli`` registers the flags (without importing torch: ``--help`` stays fast); this module prints; the work is :func:`spinebench.predict.batch.predict_files` (one result per file,
``Predictor.analyze``'s, provenance included). Exit codes: 0 all files read, 1 some file could not be read (each
said in one line on stderr, the others still done), 2 usage errors (bad flag, missing path, no weights).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from spinebench import DISCLAIMER, FINDINGS


def predict_document(predictor, entries: list[dict]) -> dict:
    """The ``--json`` document: version, disclaimer, each model's provenance, then one entry per file."""
    return {"spinebench_version": predictor.provenance["spinebench_version"], "disclaimer": DISCLAIMER,
            "provenance": predictor.provenance, "files": entries}


def predict_text(entries: list[dict]) -> str:
    """A short table per file for people (the default output)."""
    from spinebench.predict.drawing import summary_rows

    lines = []
    for e in entries:
        if "error" in e:
            lines.append(f"{e['file']}: error: {e['error']}")
            continue
        lines.append(f"{e['file']}:")
        for row in summary_rows(e["result"]):
            name, cells = row[0], []
            for j, f in enumerate(FINDINGS):
                p, decision = row[1 + 2 * j], row[2 + 2 * j]
                cells.append(f"{f} {p:.3f} {decision}" if p is not None else str(decision))
            lines.append(f"  {name:<38} " + "  ".join(c for c in cells if c))
    lines.append(DISCLAIMER)
    return "\n".join(lines) + "\n"


def cmd_predict(args) -> int:
    from spinebench.errors import SpinebenchError
    from spinebench.predict.batch import entries_rows, expand_inputs, predict_files, write_batch_rows
    from spinebench.predict.predictor import Predictor
    from spinebench.predict.sources import default_weights_dir

    files = expand_inputs(args.inputs)
    fmt = "json" if args.json else "csv" if args.csv else None
    if fmt is None and args.out:
        fmt = {".json": "json", ".csv": "csv"}.get(Path(args.out).suffix.lower())
        if fmt is None:
            raise SpinebenchError(f"--out {args.out}: say --json or --csv (or name it .json / .csv)")
    if args.report:
        try:
            Path(args.report).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SpinebenchError(f"cannot create report folder {args.report}: {e.strerror}") from None
    predictor = Predictor(args.weights or default_weights_dir(), models=args.models, device=args.device)

    def said(name: str, line: str) -> None:
        from tqdm.auto import tqdm

        tqdm.write(f"spinebench: {name}: {line}", file=sys.stderr)

    entries = predict_files(predictor, files, progress=not args.quiet and len(files) > 1, on_error=said,
                            report_dir=args.report)
    buf = io.StringIO()
    if fmt == "json":
        json.dump(predict_document(predictor, entries), buf, indent=2, allow_nan=False)
        buf.write("\n")
    elif fmt == "csv":
        write_batch_rows(entries_rows(entries), buf)
    else:
        buf.write(predict_text(entries))
    if args.out:
        try:
            Path(args.out).write_text(buf.getvalue(), encoding="utf-8")
        except OSError as e:
            raise SpinebenchError(f"cannot write {args.out}: {e.strerror}") from None
        print(f"wrote {len(entries)} file result{'' if len(entries) == 1 else 's'} to {args.out}")
    else:
        sys.stdout.write(buf.getvalue())
    if args.report:
        print(f"reports: {sum('report' in e for e in entries)} in {args.report}/", file=sys.stderr)
    return 1 if any("error" in e for e in entries) else 0
