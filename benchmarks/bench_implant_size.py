"""Which implants the image-level models miss: implant AUROC by construct size, on films no model trained on.

For every classifier and detector in a weights folder, the implant scores of all images of a data source (by
default the films of another synthetic seed: ``python -m spinebench data synth --seed 7 --scale 0.5 --out DIR``),
then the implant AUROC of each quarter of the implant films, ranked by the height of their ``Lum`` box as a
fraction of the film's, each against all the films without an implant. A model whose AUROC falls only in the
smallest quarter is limited by what its input resolution shows, not by what it learnt of hardware.

For a detector, also where its ``Lum`` AP goes: the fraction of implant films (all, and per quarter) whose
construct has some predicted ``Lum`` box, of any score, at IoU >= 0.5 (``box_hit``) and at IoU >= 0.3
(``box_hit03``: found, but not outlined tightly enough to count for AP@0.5). A quarter with ``box_hit03`` near 0
is out of the detector's reach at its input size; a gap between the two is localisation.

    python benchmarks/bench_implant_size.py --weights weights --data synth=/tmp/synth7

Results: ``benchmarks/results/implant_size_<device>.csv`` (appended): one row per model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COLUMNS = ["model", "data", "n_images", "n_implant", "auroc_all", "q1_height", "auroc_q1", "q2_height", "auroc_q2",
           "q3_height", "auroc_q3", "q4_height", "auroc_q4", "box_hit_all", "box_hit03_all",
           *(f"box_hit_q{k}" for k in range(1, 5)), *(f"box_hit03_q{k}" for k in range(1, 5)), "weights_run",
           "git_commit"]


def implant_height(record: dict) -> float:
    """The tallest ``Lum`` box of a film as a fraction of the film's height (0 without one)."""
    from spinebench import LABEL_MAP

    boxes = [b for b in record.get("boxes") or [] if int(b[4]) == LABEL_MAP["Lum"]]
    return max(((b[3] - b[1]) / float(record["height"]) for b in boxes), default=0.0)


def lum_box_hits(detections: list[dict], targets: list[dict], iou: float) -> np.ndarray:
    """Per image: does some predicted ``Lum`` box, of any score, overlap a true ``Lum`` box by IoU >= ``iou``?
    (False where the image has no true ``Lum`` box.)"""
    from torchvision.ops import box_iou

    from spinebench import LABEL_MAP

    lum = LABEL_MAP["Lum"]
    hits = np.zeros(len(targets), dtype=bool)
    for i, (d, t) in enumerate(zip(detections, targets)):
        true, found = t["boxes"][t["labels"] == lum], d["boxes"][d["labels"] == lum]
        if len(true) and len(found):
            hits[i] = bool((box_iou(true.float(), found.float()) >= iou).any())
    return hits


def size_quarters(heights: np.ndarray, y: np.ndarray) -> list[tuple[float, float]]:
    """Height ranges of the four quarters of the implant films (the last range closed)."""
    q = np.percentile(heights[y == 1], [0, 25, 50, 75, 100])
    return list(zip(q[:-1], q[1:]))


def main(argv=None) -> int:
    from spinebench.data.records import boxes_cover_findings
    from spinebench.data.sources import load_records
    from spinebench.engine.runner import decoded_dataset
    from spinebench.engine.train import predict
    from spinebench.evaluation.results import append_csv_row, git_commit
    from spinebench.models import model_info
    from spinebench.tasks import get_task
    from spinebench.tasks.base import auroc
    from spinebench.weights import trained_records

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights")
    ap.add_argument("--data", nargs="+", required=True, help="data spec(s) whose images are all scored")
    ap.add_argument("--out", default=None, help="CSV (default benchmarks/results/implant_size_cpu.csv)")
    args = ap.parse_args(argv)
    recs = trained_records(args.weights)
    names = [n for n, r in recs.items() if get_task(model_info(n)["task"]).thresholds]
    if not names:
        ap.error(f"no classifier or detector weights in {args.weights}")
    side = max(recs[n].cache_side for n in names)
    # films whose implant has its box (the size is unknown otherwise)
    records = [r for r in load_records(args.data, max_side=side)
               if boxes_cover_findings([r["implant"], r["scoliosis"]], [b[4] for b in r.get("boxes") or []])]
    heights = np.array([implant_height(r) for r in records])
    y = np.array([int(r["implant"]) for r in records])
    quarters = size_quarters(heights, y)
    data = decoded_dataset(records, side)
    out = Path(args.out or Path(__file__).resolve().parent / "results" / "implant_size_cpu.csv")
    for name in names:
        rec = recs[name]
        pred = predict(rec.load("cpu"), data.with_transform(rec.transform()), torch.device("cpu"))
        p = np.asarray(pred["probs"])[:, 0]
        row = {"model": name, "data": " ".join(args.data), "n_images": len(y), "n_implant": int(y.sum()),
               "auroc_all": round(auroc(y, p), 4), "weights_run": rec.run_id or "", "git_commit": git_commit()}
        for k, (lo, hi) in enumerate(quarters, 1):
            sel = (y == 0) | ((heights >= lo) & (heights <= hi) & (y == 1))
            row[f"q{k}_height"] = f"{lo:.3f}-{hi:.3f}"
            row[f"auroc_q{k}"] = round(auroc(y[sel], p[sel]), 4)
        if pred.get("detections") is not None:
            for col, thr in (("box_hit", 0.5), ("box_hit03", 0.3)):
                hit = lum_box_hits(pred["detections"], pred["targets"], thr)
                row[f"{col}_all"] = round(float(hit[y == 1].mean()), 4)
                for k, (lo, hi) in enumerate(quarters, 1):
                    q = (y == 1) & (heights >= lo) & (heights <= hi)
                    row[f"{col}_q{k}"] = round(float(hit[q].mean()), 4)
        append_csv_row(out, row, COLUMNS)
        print({k: row[k] for k in COLUMNS if k in row and k not in ("data", "git_commit")}, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
