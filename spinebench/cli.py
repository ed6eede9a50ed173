"""``python -m spinebench``: the command line. It parses arguments and calls the library; no logic lives here.

Every user error (bad flag, wrong path, bad spec, corrupt image) ends as one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Callable, Sequence

from spinebench import __version__
from spinebench.errors import SpinebenchError

log = logging.getLogger("spinebench")


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line (``spinebench data: error: ...``) and exits with 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def _add_split_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--split", choices=("patient", "official"), default="patient",
                   help="patient: stratified patient-level 70/15/15 (default); official: keep a source's "
                        "distributed test split as test (leaks AASCE patients 239-244, for comparison only)")
    p.add_argument("--split-file", help="reuse the splits of this split file instead of computing them")


def _records_with_splits(args) -> list[dict]:
    from spinebench.data.sources import load_records
    from spinebench.data.splits import apply_split_file, assign_splits

    records = load_records(args.specs)
    if not records:
        raise SpinebenchError(f"no images found in {' '.join(args.specs)}")
    if args.split_file:
        return apply_split_file(records, args.split_file)
    return assign_splits(records, seed=args.seed, mode=args.split)


def cmd_data_manifest(args) -> int:
    from spinebench.data.records import write_manifest

    records = _records_with_splits(args)
    path = write_manifest(records, args.out)
    print(f"wrote {len(records)} images to {path}")
    return 0


def cmd_data_inspect(args) -> int:
    from spinebench.data.inspect import summarize

    records = _records_with_splits(args)
    print(summarize(records))
    return 0


def cmd_data_synth(args) -> int:
    from spinebench.data import synth

    if args.out:
        synth.generate(args.out, n=args.n, seed=args.seed, workers=args.workers, scale=args.scale)
        print(f"wrote {args.n} synthetic radiographs and manifest.csv to {args.out}")
    if args.contact_sheet:
        synth.contact_sheet(args.contact_sheet, source=args.out, n=args.sheet_n, seed=args.seed)
        print(f"wrote contact sheet {args.contact_sheet}")
    if not args.out and not args.contact_sheet:
        raise SpinebenchError("data synth needs --out DIR and/or --contact-sheet FILE.png")
    return 0


def cmd_data_convert_mri(args) -> int:
    from spinebench.data.mri import convert_mri_series

    written = convert_mri_series(args.series_dir, args.out_dir, n_slices=args.slices)
    print(f"wrote {len(written)} slices to {args.out_dir}")
    return 0


def cmd_list_models(args) -> int:
    from spinebench.models import list_models, model_info

    rows = [model_info(name) for name in list_models()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ("name", "task", "params_m", "input_size", "pretrained_available", "paper_name")
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))
    return 0


def cmd_run_all(args) -> int:
    from spinebench.engine.runner import run_all

    overrides = {k: v for k, v in (("lr", getattr(args, "lr", None)), ("batch_size", getattr(args, "batch_size", None)),
                                   ("time_budget_s", getattr(args, "time_budget", None)),
                                   ("aux_shape_weight", getattr(args, "aux_shape_weight", None)),
                                   ("aux_implant_weight", getattr(args, "aux_implant_weight", None)),
                                   ("image_size", tuple(args.input_size) if getattr(args, "input_size", None) else None))
                 if v is not None}
    run_dir = run_all(data=args.data, profile=args.profile, models=args.models, seeds=args.seeds, device=args.device,
                      out=args.out, results=args.results, weights_dir=args.weights, pretrained=args.pretrained,
                      image_size=args.image_size, split_file=args.split_file, split_mode=args.split,
                      split_seed=args.split_seed, resume=args.resume, epochs=args.epochs,
                      progress=not args.quiet, report=not args.no_report,
                      keep_checkpoints=args.keep_checkpoints, overrides=overrides, precision=args.precision,
                      lanes=getattr(args, "lanes", 1), wall_budget_s=getattr(args, "wall_budget", None))
    lb = run_dir / "leaderboard.csv"
    print(_leaderboard_text(lb))
    print(f"run folder: {run_dir}\nleaderboard: {args.results}/leaderboard.csv\nweights: {args.weights}/")
    return 0


def _leaderboard_text(rows) -> str:
    """Result rows (or the path of a results CSV) as a fixed-width table for the terminal, each model followed by
    the paper's own numbers for it (the paper's sensitivity/specificity are our any-finding ones)."""
    from spinebench.evaluation.results import read_rows
    from spinebench.paper import paper_row

    if not isinstance(rows, list):
        rows = read_rows(rows)
    cols = ("model", "status", "pretrained", "any_sensitivity", "any_specificity", "accuracy", "loss",
            "implant_auroc", "scoliosis_auroc", "map_50", "smape", "smape_real", "train_seconds", "epochs",
            "precision", "latency_ms")

    def line(r: dict) -> str:
        cells = []
        for i, c in enumerate(cols):
            v = r.get(c, "")
            v = "" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)
            cells.append(f"{v:>16}" if i else f"{v:<36}")
        return "  ".join(cells)

    out = ["  ".join(f"{c:>16}" if i else f"{c:<36}" for i, c in enumerate(cols))]
    for r in rows:
        out.append(line(r))
        paper = paper_row(str(r.get("model", "")))
        if paper:
            out.append(line({"model": "  the paper (Le Van et al. 2020)", "any_sensitivity": paper["sensitivity"],
                             "any_specificity": paper["specificity"], "accuracy": paper["accuracy"],
                             "loss": paper["loss"]}))
    return "\n".join(out)


def cmd_evaluate(args) -> int:
    from spinebench.engine.runner import evaluate

    rows = evaluate(weights_dir=args.weights, data=args.data, models=args.models, device=args.device,
                    split=args.on, split_file=args.split_file, split_seed=args.seed, out=args.out,
                    n_boot=args.n_boot, progress=not args.quiet)
    if args.out:
        print(_leaderboard_text(rows))  # this call's rows, not everything the file has collected
        print(f"wrote {len(rows)} row{'' if len(rows) == 1 else 's'} to {args.out}")
    else:
        import csv as _csv
        from spinebench.evaluation.results import RESULT_COLUMNS

        w = _csv.DictWriter(sys.stdout, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return 0


def _add_precision_arg(p: argparse.ArgumentParser) -> None:
    from spinebench.engine.device import PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS, default=os.environ.get("SPINEBENCH_PRECISION", "auto"),
                   help="auto (default): bf16-mixed on CUDA and on CPUs with AVX512-BF16/AMX, else fp32; "
                        "the rows record the one used (scores are always computed in fp32)")


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """The flags run-all and train share."""
    p.add_argument("--data", nargs="+", default=["synth"], metavar="SPEC",
                   help="data specs (default: synth, the embedded synthetic set)")
    p.add_argument("--profile", choices=("quick", "paper"), default="quick",
                   help="quick: ~9 min on a 2-core CPU (smoke-scale); paper: the paper's protocol, for a GPU")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    _add_precision_arg(p)
    p.add_argument("--pretrained", choices=("auto", "imagenet", "none"), default="auto",
                   help="auto: ImageNet weights when cached/downloadable, else random init with a warning; "
                        "imagenet: fail if they cannot be had; none: random init")
    p.add_argument("--image-size", type=int, help="classifier input side in pixels (48 reproduces the paper)")
    p.add_argument("--epochs", type=int, help="override the profile's epochs")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="each model's training time in seconds, validation included (its cosine schedule follows "
                        "the clock and the best validated state is kept; default: the profile's, which quick "
                        "scales down where a slower machine would take run-all past the profile's wall budget)")
    p.add_argument("--aux-shape-weight", type=float, metavar="W",
                   help="classifiers: also regress the spine's shape (vertebra centres and tilts from the "
                        "landmarks) with this weight while training (1 pays from ~240 steps; default: the "
                        "profile's: 1 for DenseNet-121, Inception-v3 and SqueezeNet in quick, for ResNet-50, "
                        "DenseNet-121 and Inception-v3 in paper; 0 = off)")
    p.add_argument("--aux-implant-weight", type=float, metavar="W",
                   help="classifiers: also learn where the implant boxes are, per cell of the map before pooling, "
                        "with this weight while training (default: the profile's; 0 = off)")
    p.add_argument("--out", default="runs", help="folder for run folders (default runs/)")
    p.add_argument("--results", default="results", help="folder of leaderboard.csv (default results/)")
    p.add_argument("--weights", default="weights", help="folder for trained weights (default weights/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run folder")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--split", choices=("patient", "official"), default="patient")
    p.add_argument("--split-file", help="reuse the splits of this split file")
    p.add_argument("--no-report", action="store_true", help="skip the tables/figures report at the end")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep each model's training checkpoint in the run folder (default: deleted once its "
                        "weights are saved)")
    p.add_argument("-q", "--quiet", dest="sub_quiet", action="store_true",
                   help="no progress bars, warnings only (same as spinebench -q)")
    p.set_defaults(func=cmd_run_all)


def _add_train_commands(sub) -> None:
    p = sub.add_parser("run-all", help="train and score all six models (and the Cobb model) on the same splits; "
                                         "write a leaderboard")
    _add_run_args(p)
    p.add_argument("--lanes", type=int, default=1, metavar="N",
                   help="train the models in N processes at once on the one device (a GPU: the paper profile's "
                        "seven in a quarter of the time; on a CPU they share its cores; default 1)")
    p.add_argument("--wall-budget", type=float, metavar="SECONDS",
                   help="quick profile: end the run by this many seconds, every model's time budget scaled up or "
                        "down to share them (default: the profile's 570; a CPU without bf16 units needs ~1500 for "
                        "the steps one with them gets in 570)")
    p.add_argument("--models", nargs="+", metavar="NAME", help="subset of registered models (default: every one: the six and the Cobb "
                   "model, which is skipped with a note when the data has no landmarks)")

    p = sub.add_parser("train", help="train and score one registered model (the same loop, protocol and run folder "
                                     "as run-all)",
                       description="Train MODEL on the train split of --data, select it on validation, score it on "
                                   "test, save its weights. Example: train cobb_vertebra_resnet34 --data "
                                   "aasce=PATH --profile paper --device cuda")
    p.add_argument("models", nargs=1, metavar="MODEL", help="a registered model (see list-models)")
    _add_run_args(p)
    p.add_argument("--lr", type=float, help="override the profile's learning rate")
    p.add_argument("--batch-size", type=int, help="override the profile's batch size")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"),
                   help="model input (classifiers and the Cobb model; the Cobb model wants multiples of 32)")

    p = sub.add_parser("evaluate", help="score saved weights on any data without training")
    p.add_argument("--weights", default="weights")
    p.add_argument("--data", nargs="+", default=["synth"], metavar="SPEC")
    p.add_argument("--models", nargs="+", metavar="NAME")
    p.add_argument("--device", default="auto")
    p.add_argument("--on", choices=("test", "val", "train", "all"), default="test",
                   help="which split of the data to score (default test)")
    p.add_argument("--split-file")
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--out", help="append rows to this CSV (else print CSV to stdout)")
    p.add_argument("-q", "--quiet", dest="sub_quiet", action="store_true",
                   help="no progress bars, warnings only (same as spinebench -q)")
    p.set_defaults(func=cmd_evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spinebench", description="spinebench: find lumbar implants and diagnose scoliosis on spine X-rays, and benchmark the models that do it.",
                     epilog="Data specs: synth | synth=DIR | aasce=PATH | vindr=PATH | folder=PATH | coco=FILE | "
                            "manifest=FILE | hybrid:SPEC")
    parser.add_argument("--version", action="version", version=f"spinebench {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    data = sub.add_parser("data", help="data sets: manifests, inspection, synthetic data, MRI conversion")
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", parser_class=_Parser)

    p = dsub.add_parser("manifest", help="write one CSV row per image (labels, split, Cobb angles, boxes)")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--out", required=True, help="output CSV file")
    _add_split_args(p)
    p.set_defaults(func=cmd_data_manifest)

    p = dsub.add_parser("inspect", help="print counts per source, finding and split")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    _add_split_args(p)
    p.set_defaults(func=cmd_data_inspect)

    p = dsub.add_parser("synth", help="generate synthetic AP spine radiographs (the embedded default data)")
    p.add_argument("--out", help="output folder (images + manifest.csv)")
    p.add_argument("--n", type=int, default=600, help="number of images (default 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="parallel workers (default: CPU count)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="film size (default 1: 800-1200 px tall; 0.5: 400-600 px, what the quick profile renders)")
    p.add_argument("--contact-sheet", metavar="FILE.png", help="also render a contact sheet of the images")
    p.add_argument("--sheet-n", type=int, default=24, help="images on the contact sheet (default 24)")
    p.set_defaults(func=cmd_data_synth)

    p = dsub.add_parser("convert-mri", help="turn a DICOM MRI series into a few 2D DICOM + PNG slices")
    p.add_argument("series_dir")
    p.add_argument("out_dir")
    p.add_argument("--slices", type=int, default=3, help="central sagittal slices to keep (default 3)")
    p.set_defaults(func=cmd_data_convert_mri)

    p = sub.add_parser("list-models", help="the registered models: task, parameters, input size, weights")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list_models)

    for extra in _EXTRA_COMMANDS:
        extra(sub)
    return parser


#: Later subcommands (run-all, evaluate, measure, figures) register here: fn(subparsers) -> None.
_EXTRA_COMMANDS: list[Callable] = [_add_train_commands]


def _add_figures_command(sub) -> None:
    from spinebench.figures import add_figures_command

    add_figures_command(sub)


_EXTRA_COMMANDS.append(_add_figures_command)


def _add_measure_command(sub) -> None:
    from spinebench.measure import add_measure_command

    add_measure_command(sub)


_EXTRA_COMMANDS.append(_add_measure_command)


def _add_weights_command(sub) -> None:
    from spinebench.hub import add_weights_command

    add_weights_command(sub)


_EXTRA_COMMANDS.append(_add_weights_command)


def cmd_predict(args) -> int:
    from spinebench.predict.cli import cmd_predict as run

    return run(args)


def _add_predict_command(sub) -> None:
    """``predict``: flags here, the work in :mod:`spinebench.predict.cli` (imported only when it runs)."""
    p = sub.add_parser("predict", help="every trained model on X-ray files or folders: probabilities, decisions, "
                                       "boxes, Cobb angles, with the weights' provenance",
                       description="Run every trained model (as the demo does) on each file; a folder stands for "
                                   "its image files (png, jpg, jpeg, tif, tiff, dcm, extension-less DICOM). A file "
                                   "that cannot be read is one line on stderr and the others go on (exit code 1).")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_DIR")
    p.add_argument("--models", nargs="+", metavar="NAME", help="only these trained models (default: all)")
    p.add_argument("--weights", metavar="DIR_OR_HUB",
                   help="weights folder or hf://user/repo[@revision] (default: $SPINEBENCH_WEIGHTS_DIR or weights/)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON document (every model's full result)")
    fmt.add_argument("--csv", action="store_true", help="one CSV row per file and model")
    p.add_argument("--out", metavar="PATH", help="write the output here instead of stdout")
    p.add_argument("--report", metavar="DIR", help="also one self-contained HTML page per X-ray here (images, "
                   "boxes, heatmaps, summary, Cobb overlay, provenance)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("-q", "--quiet", dest="sub_quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predict)


_EXTRA_COMMANDS.append(_add_predict_command)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.quiet = args.quiet or getattr(args, "sub_quiet", False)  # `spinebench -q run-all` or `run-all --quiet`
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # third-party chatter (static figure export, HTTP clients) stays out of the user's way
        for noisy in ("matplotlib", "httpx", "urllib3", "PIL"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        # `spinebench` or `spinebench data` alone: show what there is to do
        target = parser
        if args.command == "data":
            target = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" data"))
        target.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except SpinebenchError as e:
        print(f"spinebench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spinebench: interrupted", file=sys.stderr)
        return 130
