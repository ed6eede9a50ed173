"""What the detectors' score floor (torchvision's ``box_score_thresh``, 0.05 by default) costs their image-level
implant AUROC and ``Lum`` AP, on saved weights.

A detector's image-level implant score is its best ``Lum`` box's score, 0 when it keeps no box. At the default floor
a quick detector keeps no ``Lum`` box on two thirds of the films, so every implant film it is unsure of ties at 0
with most films without one, and AUROC counts each such pair as a coin toss; AP's recall also ends where the floor
cuts. Boxes under the floor still rank films. Post-processing is inference only, so every floor is scored on the
same weights and needs no retraining: each film's boxes are computed once with no floor and no ``Lum`` fusion, then
for each floor the boxes under it are dropped and the model's own fusion is applied (torchvision drops boxes under
the floor before its NMS, where a dropped box could only have been suppressed by a better one, so this is the same
as building the model with that floor).

    python benchmarks/bench_score_floor.py --weights W1 W2 --data synth --split-file RUN/split.csv --on val
    python benchmarks/bench_score_floor.py --weights W1 W2 --data synth=/tmp/synth7              # unseen films
    python benchmarks/bench_score_floor.py --weights W1 W2 --data hybrid:aasce=PATH              # real films

Results: ``benchmarks/results/score_floor_<device>.csv`` (appended): one row per detector, data and floor.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# this folder is on sys.path when run as a script
from bench_box_fusion import add_saved_detector_args, saved_models  # noqa: E402

COLUMNS = ["model", "weights", "weights_run", "data", "on", "n_images", "floor", "films_without_lum_box",
           "implant_auroc", "ap50_Lum", "map_Lum", "git_commit"]


def above(detections: list[dict], floor: float) -> list[dict]:
    """Each image's boxes scored at least ``floor``."""
    return [{k: v[d["scores"] >= floor] for k, v in d.items()} for d in detections]


def main(argv=None) -> int:
    from sklearn.metrics import roc_auc_score

    from spinebench import FINDINGS
    from spinebench.engine.train import predict
    from spinebench.evaluation.detection import detection_map
    from spinebench.evaluation.metrics import image_scores_from_detections
    from spinebench.evaluation.results import append_csv_row
    from spinebench.models.detectors import fuse_boxes

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_saved_detector_args(ap)
    ap.add_argument("--floors", nargs="+", type=float, default=[0.05, 0.01, 0.001, 0.0], help="score floors")
    ap.add_argument("--out", default=None, help="CSV (default benchmarks/results/score_floor_cpu.csv)")
    args = ap.parse_args(argv)
    out = Path(args.out or Path(__file__).resolve().parent / "results" / "score_floor_cpu.csv")
    implant = FINDINGS.index("implant")
    for rec, data, base in saved_models(args.weights, args.data, args.split_file, args.on, ap.error):
        model = rec.load("cpu")
        fusion, model.class_box_fusion = model.class_box_fusion, {}
        model.roi_heads.score_thresh = 0.0
        pred = predict(model, data, torch.device("cpu"))
        y = np.asarray(pred["labels"])[:, implant]
        for floor in args.floors:
            dets = above(pred["detections"], floor)
            dets = fuse_boxes(dets, fusion) if fusion else dets
            scores = image_scores_from_detections(dets, len(dets))[:, implant]
            r = detection_map(dets, pred["targets"])
            row = {**base, "floor": floor, "films_without_lum_box": int((scores == 0).sum()),
                   "implant_auroc": round(float(roc_auc_score(y, scores)), 4) if 0 < y.sum() < len(y) else "",
                   "ap50_Lum": round(r["ap50_Lum"], 4), "map_Lum": round(r["map_Lum"], 4)}
            append_csv_row(out, row, COLUMNS)
            print(f"{base['model']} {base['weights']} floor {floor:g}: no Lum box {row['films_without_lum_box']} of {len(dets)}, "
                  f"implant AUROC {row['implant_auroc']}, Lum AP50 {row['ap50_Lum']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
