"""The films without a finding that the trained models score highest for it, and a contact sheet of them.

Why: an AUROC says how many films without an implant outrank the implant films, not which films or why. Looking at
the ones the models agree on is how the quick classifiers' false alarms on the real AASCE films were traced to the
metal of the patients' clothes (strap buckles, snap fasteners, underwires, a zip pull: 10 of the 16 films ranked
highest; docs/results.md, session 48).

    python benchmarks/bench_false_alarms.py --weights weights --data aasce=../shared/data/aasce2019 \\
        --out /tmp/false_alarms.csv --sheet /tmp/false_alarms.png

Each classifier and detector in ``--weights`` scores every film of ``--data`` (``--split``, default all) as
``evaluate`` does; a film's rank under one model is the share of the films without the finding that it scores
above (ties count half: 1.0 = the model's most confident false alarm), and films are ordered by their mean rank over
the models. ``--out`` gets one row per film without the finding and model (written afresh: a report of one set of
weights, not a running table); the sheet shows the ``--top`` films, captioned with their mean rank and each
model's score. Use the training split of a real data set only.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COLUMNS = ["order", "image_id", "finding", "rank_mean", "model", "score", "rank", "weights_run"]


def ranks_among_negatives(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """For each film with ``y == 0``, the share of the ``y == 0`` films it scores above (ties half), in their
    order: 1.0 is the model's most confident false alarm, 0.5 a median film."""
    from scipy.stats import rankdata

    neg = np.asarray(p, dtype=np.float64)[np.asarray(y) == 0]
    if len(neg) == 0:
        return neg
    return (rankdata(neg) - 1) / max(1, len(neg) - 1)  # mid-ranks: a tie counts half above, half below


def false_alarms(y: np.ndarray, scores: dict[str, np.ndarray]) -> list[tuple[int, float, dict[str, float]]]:
    """The films with ``y == 0`` as ``(index, mean rank, {model: rank})``, highest mean rank first (ties by index)."""
    idx = np.flatnonzero(np.asarray(y) == 0)
    per = {m: ranks_among_negatives(y, p) for m, p in scores.items()}
    mean = np.mean([r for r in per.values()], axis=0) if per else np.zeros(len(idx))
    order = sorted(range(len(idx)), key=lambda k: (-mean[k], idx[k]))
    return [(int(idx[k]), float(mean[k]), {m: float(r[k]) for m, r in per.items()}) for k in order]


def main(argv=None) -> int:
    from spinebench import FINDINGS
    from spinebench.data.sources import load_records
    from spinebench.data.splits import assign_splits
    from spinebench.data.synth import tile_sheet
    from spinebench.engine.runner import decoded_dataset
    from spinebench.engine.train import predict
    from spinebench.errors import SpinebenchError
    from spinebench.io import load_image
    from spinebench.weights import trained_records

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights")
    ap.add_argument("--data", required=True, help="a data spec, e.g. aasce=PATH")
    ap.add_argument("--finding", default="implant", choices=list(FINDINGS))
    ap.add_argument("--split", default="all", choices=["all", "train", "val", "test"],
                    help="score this split of the patient split run-all uses (seed 0); all: every film")
    ap.add_argument("--models", nargs="+", default=None, help="default: every classifier and detector in --weights")
    ap.add_argument("--top", type=int, default=16, help="films on the contact sheet (and printed)")
    ap.add_argument("--out", default=None, help="CSV of every film without the finding, per model")
    ap.add_argument("--sheet", default=None, help="PNG contact sheet of the --top films")
    args = ap.parse_args(argv)
    recs = trained_records(args.weights)
    names = [n for n, r in recs.items() if r.task in ("classification", "detection")
             and (args.models is None or n in args.models)]
    if not names:
        ap.error(f"no classifier or detector weights in {args.weights}" +
                 (f" named {' '.join(args.models)}" if args.models else ""))
    side = max(recs[n].cache_side for n in names)
    try:  # a wrong path or spec is one line, not a traceback
        records = load_records([args.data], max_side=side)
    except (SpinebenchError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.split != "all":
        records = [r for r in assign_splits(records, seed=0) if r["split"] == args.split]
    k = FINDINGS.index(args.finding)
    y = np.array([int(r[args.finding]) for r in records])
    if not (y == 0).any():
        ap.error(f"no film of {args.data} is without {args.finding}")
    data = decoded_dataset(records, side)
    scores = {}
    for name in names:
        rec = recs[name]
        pred = predict(rec.load("cpu"), data.with_transform(rec.transform()), torch.device("cpu"))
        scores[name] = np.asarray(pred["probs"])[:, k]
    ranked = false_alarms(y, scores)
    for order, (i, mean, per) in enumerate(ranked[:args.top], 1):
        print(f"{order:3d} {mean:.3f} {records[i]['image_id']} " +
              " ".join(f"{n}={scores[n][i]:.2f}" for n in names), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS)
            w.writeheader()
            for order, (i, mean, per) in enumerate(ranked, 1):
                for n in names:
                    w.writerow({"order": order, "image_id": records[i]["image_id"], "finding": args.finding,
                                "rank_mean": round(mean, 4), "model": n, "score": round(float(scores[n][i]), 4),
                                "rank": round(per[n], 4), "weights_run": recs[n].run_id or ""})
    if args.sheet:
        tiles = [(load_image(records[i]["path"])[0],
                  f"{order} {records[i]['image_id'].split('/')[-1][-12:]} rank {mean:.2f}")
                 for order, (i, mean, _) in enumerate(ranked[:args.top], 1)]
        print("sheet:", tile_sheet(args.sheet, tiles, height=420, cols=8))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
