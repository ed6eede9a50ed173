"""How each threshold rule's calls (``evaluation.metrics.THRESHOLD_METHODS``) hold on films no model saw, on saved
weights: the rule picks each finding's threshold on the model's own run's validation films, as the runner does,
and the calls at those thresholds are scored on ``--data``.

Why: a rule that fits ~100 validation films well may call unseen films worse; and the run's test split (84 films)
moves a classifier's call by 0.1-0.3 from run to run, so it cannot tell rules apart. This is inference only: every
rule is scored on the same predictions. The validation films are those of the run that saved the weights (the
record's data spec and split file; a relative split file is read from the weights folder's parent, the clone the
run was made in). The "balanced" rule (the protocol's since session 44) was chosen with it:

    python -m spinebench data synth --seed 7 --scale 0.5 --out /tmp/synth7
    python benchmarks/bench_thresholds.py --weights CLONE1/weights CLONE2/weights --data synth=/tmp/synth7

Results: ``benchmarks/results/thresholds_<device>.csv`` (appended): one row per model, weights folder and rule, with
the thresholds and the per-finding and either-finding sensitivity / specificity on ``--data``; a summary per rule
is printed (means, and how many models reach 0.80 / 0.80 on the either-finding call).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# this folder is on sys.path when run as a script
from bench_box_fusion import saved_models  # noqa: E402

COLUMNS = ["model", "weights", "weights_run", "data", "n_val", "n_images", "method", "implant_threshold",
           "scoliosis_threshold", "implant_sensitivity", "implant_specificity", "scoliosis_sensitivity",
           "scoliosis_specificity", "any_sensitivity", "any_specificity", "git_commit"]


def run_split_file(folder: str, fail) -> tuple[list[str], str]:
    """(data spec, split file) of the run that saved the models in weights ``folder`` (its records agree)."""
    from spinebench.weights import trained_records

    if not Path(folder).is_dir():
        fail(f"weights folder not found: {folder}")
    recs = [r for r in trained_records(folder).values() if r.split_file]
    if not recs:
        fail(f"no record in {folder} names its run's split file")
    rec = recs[0]
    split = Path(rec.split_file)
    if not split.is_absolute():
        split = Path(folder).resolve().parent / split
    return rec.data.split(), str(split)


def main(argv=None) -> int:
    from spinebench.engine.train import predict
    from spinebench.evaluation.metrics import THRESHOLD_METHODS, choose_thresholds, evaluate_image_level
    from spinebench.evaluation.results import append_csv_row

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", nargs="+", default=["weights"], help="weights folder(s), each from one run")
    ap.add_argument("--data", nargs="+", required=True, help="data spec(s) whose films are called (all of them)")
    ap.add_argument("--methods", nargs="+", default=[m for m in THRESHOLD_METHODS if m != "fixed"],
                    choices=THRESHOLD_METHODS)
    ap.add_argument("--tasks", nargs="+", default=["classification"], choices=["classification", "detection"],
                    help="which image-level models (default the classifiers: a detector is ~10x slower to score)")
    ap.add_argument("--out", default=None, help="CSV (default benchmarks/results/thresholds_cpu.csv)")
    args = ap.parse_args(argv)
    out = Path(args.out or Path(__file__).resolve().parent / "results" / "thresholds_cpu.csv")
    cpu, tasks = torch.device("cpu"), tuple(args.tasks)
    summary: dict[str, list] = {m: [] for m in args.methods}
    for folder in args.weights:
        val_data, split = run_split_file(folder, ap.error)
        models, val = {}, {}   # each model loaded once, its validation predictions kept
        for rec, ds, _ in saved_models([folder], val_data, split, "val", ap.error, tasks):
            models[rec.model] = rec.load(cpu)
            val[rec.model] = predict(models[rec.model], ds, cpu)
        for rec, ds, base in saved_models([folder], args.data, None, "all", ap.error, tasks):
            pred, v = predict(models[rec.model], ds, cpu), val[rec.model]
            for method in args.methods:
                t = choose_thresholds(v["labels"], v["probs"], method=method)
                m = evaluate_image_level(pred["labels"], pred["probs"], pred["patient_ids"], t, n_boot=0)
                row = {**base, "n_val": len(v["labels"]), "method": method, "implant_threshold": round(t[0], 4),
                       "scoliosis_threshold": round(t[1], 4),
                       **{f"{g}_{q}": round(m[f"{g}_{q}"], 4) for g in ("implant", "scoliosis", "any")
                          for q in ("sensitivity", "specificity")}}
                append_csv_row(out, row, COLUMNS)
                summary[method].append((row["any_sensitivity"], row["any_specificity"]))
                print(f"{rec.model} {folder} {method}: thresholds {t[0]:.3f} / {t[1]:.3f}, either finding "
                      f"{row['any_sensitivity']:.3f} / {row['any_specificity']:.3f}", flush=True)
    for method, rows in summary.items():
        r = np.asarray(rows)
        print(f"{method}: {len(r)} models, sensitivity / specificity {r[:, 0].mean():.3f} / {r[:, 1].mean():.3f}, "
              f"worse of the two {r.min(1).mean():.3f}, both >= 0.80: {int((r.min(1) >= 0.8).sum())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
