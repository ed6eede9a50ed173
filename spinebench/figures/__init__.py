"""The paper's tables and figures, regenerated from our results, and a report for every run.

    from spinebench import figures
    figures.build_report(run_dir="runs/20250101-120000-quick")   # -> runs/.../report/report.html
    figures.comparison_figure(rows, ["cls_resnet50", "cls_densenet121"])  # paper vs ours, plotly
    figures.leaderboard_table(rows)                               # "0.91 [0.85, 0.96]" cells, pandas

CLI: ``python -m spinebench figures --run RUN_DIR --out DIR`` or ``--results results/leaderboard.csv``.

What is drawn (see :mod:`spinebench.figures.report` for the file layout): Tables 5 and 6 (paper value beside ours
with a 95% CI; CSV, Markdown, LaTeX), Figures 8 and 9 (paper vs ours), and beyond the paper ROC curves, confusion
matrices, training curves, detection mAP per class, Cobb-angle agreement and a grid of test images.

Inputs read from a run folder (written by :mod:`spinebench.engine.runner`): ``leaderboard.csv`` (or
``metrics/*.json``), ``config.json``, ``split.csv``, ``logs/<model>-s<seed>.csv``,
``predictions/<model>-s<seed>.csv`` and ``metrics/<model>-s<seed>.json`` (its ``thresholds``).

A Cobb-angle model adds ``predictions/<model>-s<seed>-cobb.csv`` with the columns of
:data:`COBB_PREDICTION_COLUMNS`: ``image_id, patient_id, true_pt, true_mt, true_tl, pred_pt, pred_mt, pred_tl``
(one row per test image, degrees, empty where unknown), and its result row (``task`` = "cobb", ``smape``,
``mae_pt``...) in the leaderboard; the report then draws the predicted-vs-true scatter and Bland-Altman plots.
"""

from __future__ import annotations

import argparse
import importlib

# public name -> submodule; imported on first use so that `python -m spinebench --help` stays light (plotly and
# pandas load only when a figure is made)
_LAZY = {
    "static_export_error": "export", "write_figures": "export",
    "cobb_figures": "plots", "comparison_figure": "plots", "confusion_figure": "plots",
    "detection_map_figure": "plots", "image_grid_figure": "plots", "model_colors": "plots", "roc_figure": "plots",
    "training_figure": "plots",
    "COBB_PREDICTION_COLUMNS": "report", "PREDICTION_COLUMNS": "report", "build_report": "report",
    "load_results": "report", "load_run": "report",
    "leaderboard_table": "tables", "paper_table": "tables", "paper_table_files": "tables", "select_rows": "tables",
}
__all__ = sorted([*_LAZY, "add_figures_command"])


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"spinebench.figures.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'spinebench.figures' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def cmd_figures(args) -> int:
    from spinebench.figures.report import build_report

    out = build_report(run_dir=args.run, results=args.results, out=args.out, static=not args.no_static,
                       n_images=args.images)
    print(f"report: {out / 'report.html'}\nmarkdown: {out / 'report.md'}\ntables: {out / 'tables'}/\n"
          f"figures: {out / 'figures'}/")
    return 0


def add_figures_command(sub: argparse._SubParsersAction) -> None:
    """Register ``figures`` on the CLI (appended to ``spinebench.cli._EXTRA_COMMANDS``)."""
    p = sub.add_parser("figures", help="the paper's tables and figures from a run or a leaderboard, and a report")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", metavar="RUN_DIR", help="a run folder written by run-all (all figures)")
    src.add_argument("--results", metavar="CSV",
                     help="a leaderboard CSV, e.g. results/leaderboard.csv (tables and paper figures only)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: RUN_DIR/report, or report/ beside the CSV)")
    p.add_argument("--no-static", action="store_true", help="skip PNG/SVG export (interactive HTML only)")
    p.add_argument("--images", type=int, default=8, metavar="N", help="test images in the grid (default 8; 0: none)")
    p.set_defaults(func=cmd_figures)
