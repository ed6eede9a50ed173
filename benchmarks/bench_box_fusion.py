"""What a detector's post-processing does to its ``Lum`` AP, on saved weights: NMS against weighted box fusion.

For every detector in one or more weights folders, the detections of a data source (optionally only one split of a
run's ``split.csv``) are computed once per torchvision box-NMS threshold (``--nms``, ``box_nms_thresh``), without
the model's own per-class post-processing, and then scored (``Lum`` AP@0.5 and AP@[.5:.95]) after each of:
``none``; a second ``Lum`` NMS at IoU 0.3 (``class_nms``: the quick profile's rule before session 30); and ``Lum``
box fusion at each IoU of ``--fusion`` (``fuse_boxes``: the quick profile's rule since). A row ``as_saved`` scores
the model as its weights record builds it. Post-processing is inference only, so every variant is paired on the
same weights: the comparison needs no retraining and no seeds.

    python benchmarks/bench_box_fusion.py --weights /tmp/fc36/weights --data synth=CACHE/synth/v3-n600-s0-x0.5 \\
        --split-file /tmp/fc36/runs/RUN/split.csv --on val
    python benchmarks/bench_box_fusion.py --weights weights --data synth=/tmp/synth7     # unseen films

Results: ``benchmarks/results/box_fusion_<device>.csv`` (appended): one row per detector, NMS and variant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

COLUMNS = ["model", "weights", "weights_run", "data", "on", "n_images", "box_nms", "post", "ap50_Lum", "map_Lum",
           "git_commit"]


def variants(detections: list[dict], fusions: list[float]) -> dict[str, list[dict]]:
    """The post-processing variants of one set of detections, by name."""
    from spinebench import LABEL_MAP
    from spinebench.models.detectors import class_nms, fuse_boxes

    lum = LABEL_MAP["Lum"]
    out = {"none": detections, "nms0.3": class_nms(detections, {lum: 0.3})}
    for t in fusions:
        out[f"fuse{t:g}"] = fuse_boxes(detections, {lum: t})
    return out


def add_saved_detector_args(ap: argparse.ArgumentParser) -> None:
    """The options of :func:`saved_models` (--weights, --data, --split-file, --on), for every script that reads
    saved detectors."""
    ap.add_argument("--weights", nargs="+", default=["weights"], help="weights folder(s)")
    ap.add_argument("--data", nargs="+", required=True, help="data spec(s) whose images are scored")
    ap.add_argument("--split-file", default=None, help="a run's split.csv: score only its --on split")
    ap.add_argument("--on", default="val", help="which split of --split-file (default val)")


def saved_models(folders: list[str], data: list[str], split_file: str | None, on: str, fail,
                 tasks: tuple[str, ...] = ("detection",)):
    """Every model of ``tasks`` (detectors by default) in the weights ``folders``, each with ``data``'s images as it
    reads them (decoded once per cache side; with ``split_file``, the run's own cut and only its ``on`` split) and the
    columns every row about it starts with: yields (record, dataset, row). ``fail(message)`` is called for a missing
    split file and for a folder without such models."""
    from spinebench.data.sources import load_records
    from spinebench.data.splits import apply_split_file
    from spinebench.engine.runner import decoded_dataset
    from spinebench.evaluation.results import git_commit
    from spinebench.models import model_info
    from spinebench.weights import trained_records

    if split_file and not Path(split_file).is_file():
        fail(f"split file not found: {split_file}")
    decoded = {}
    for folder in folders:
        recs = trained_records(folder)
        names = [n for n in recs if model_info(n)["task"] in tasks]
        if not names:
            fail(f"no {' or '.join(tasks)} weights in {folder}")
        for name in names:
            rec = recs[name]
            side = rec.cache_side
            if side not in decoded:
                records = load_records(data, max_side=side)
                if split_file:   # the run's own cut (apply_split_file), then only its --on split
                    records = [r for r in apply_split_file(records, split_file) if r["split"] == on]
                decoded[side] = decoded_dataset(records, side)
            ds = decoded[side].with_transform(rec.transform())
            yield rec, ds, {"model": name, "weights": folder, "weights_run": rec.run_id or "", "data": " ".join(data),
                            "on": on if split_file else "all", "n_images": len(ds), "git_commit": git_commit()}


def main(argv=None) -> int:
    from spinebench.engine.train import predict
    from spinebench.evaluation.detection import detection_map
    from spinebench.evaluation.results import append_csv_row

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_saved_detector_args(ap)
    ap.add_argument("--nms", nargs="+", type=float, default=[0.5, 0.7], help="box_nms_thresh values")
    ap.add_argument("--fusion", nargs="+", type=float, default=[0.1, 0.15, 0.2, 0.3], help="Lum fusion IoUs")
    ap.add_argument("--out", default=None, help="CSV (default benchmarks/results/box_fusion_cpu.csv)")
    args = ap.parse_args(argv)
    out = Path(args.out or Path(__file__).resolve().parent / "results" / "box_fusion_cpu.csv")
    for rec, data, base in saved_models(args.weights, args.data, args.split_file, args.on, ap.error):
        name, folder = base["model"], base["weights"]
        model = rec.load("cpu")
        runs = [("as_saved", model.roi_heads.nms_thresh, None)] + [("raw", t, t) for t in args.nms]
        for kind, shown, nms in runs:
            if nms is not None:
                model.roi_heads.nms_thresh, model.class_nms_thresh, model.class_box_fusion = nms, {}, {}
            pred = predict(model, data, torch.device("cpu"))
            sets = {"as_saved": pred["detections"]} if kind == "as_saved" else variants(pred["detections"],
                                                                                         args.fusion)
            for post, dets in sets.items():
                r = detection_map(dets, pred["targets"])
                row = {**base, "box_nms": shown, "post": post, "ap50_Lum": round(r["ap50_Lum"], 4),
                       "map_Lum": round(r["map_Lum"], 4)}
                append_csv_row(out, row, COLUMNS)
                print(f"{name} {folder} nms {shown} {post:9s} Lum AP50 {row['ap50_Lum']:.3f} "
                      f"AP {row['map_Lum']:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
