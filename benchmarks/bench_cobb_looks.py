"""How a trained Cobb model's SMAPE depends on the looks it averages (``spinebench.tasks.cobb.LOOKS``).

One prediction pass of all 18 looks (zoom x shift x mirrored) per film, then every subset measured from it: one look,
the film and its mirror image with their corners averaged (what a mirrored look at test time used to mean here) or
their angles averaged, six looks, all 18, and the median angle of the 18. Validation films are what the looks were
chosen on; unseen and real films say what the choice gave.

    python benchmarks/bench_cobb_looks.py --weights weights --data synth=/tmp/synth7 aasce=PATH
    python benchmarks/bench_cobb_looks.py --weights weights --data synth --split-file runs/RUN/split.csv --on val

Results: ``benchmarks/results/cobb_looks_<device>.csv`` (appended; one row per weights x data x subset).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

log = logging.getLogger("bench_cobb_looks")

COLUMNS = ["model", "weights", "seed", "data", "split", "n_images", "looks", "n_looks", "average", "smape",
           "device", "git_commit"]


def subsets(looks: tuple) -> list[tuple[str, list[int], str]]:
    """(name, indices into ``looks``, how they are combined: mean angles, median angles or mean corners)."""
    def pick(cond):
        return [i for i, look in enumerate(looks) if cond(*look)]

    plain = pick(lambda z, dy, m: (z, dy) == (1.0, 0.0))
    every = list(range(len(looks)))
    return [("one look", [0], "mean angles"), ("mirrored pair", plain, "mean corners"),
            ("mirrored pair", plain, "mean angles"),
            ("3 shifts x mirrored", pick(lambda z, dy, m: z == 1.0), "mean angles"),
            ("3 zooms x mirrored", pick(lambda z, dy, m: dy == 0.0), "mean angles"),
            ("all", every, "mean angles"), ("all", every, "median angles")]


def films(spec: str, side: int, split_file: str | None, on: str):
    """The films of ``spec`` a Cobb model can be scored on, decoded at ``side`` (only the ``on`` split of the run's
    ``split_file`` unless ``on`` is all). Also ``bench_cobb_gain.py``'s."""
    import spinebench as sb
    from spinebench.data.splits import apply_split_file
    from spinebench.tasks import get_task

    records = sb.load_records(spec, max_side=side)
    if split_file:
        apply_split_file(records, split_file)
    if on != "all":
        records = [r for r in records if r.get("split") == on]
    return get_task("cobb").scorable(sb.SpineDataset(records, max_side=side))


def bench(weights: str, spec: str, split_file: str | None, on: str, device: str) -> list[dict]:
    import torch

    import spinebench as sb
    from spinebench.cobb import cobb_angles_many, smape
    from spinebench.measure import cobb_models
    from spinebench.tasks.cobb import LOOKS, LandmarkInput, predict_looks, stack_inputs

    name = cobb_models(weights)[0]
    model, rec = sb.load_trained(name, weights=weights, device=device)
    ds = films(spec, rec.cache_side, split_file, on)
    data = stack_inputs(ds, LandmarkInput.of(model))
    pts = predict_looks(model, data, torch.device(device), looks=LOOKS)  # (18, N, 68, 2)
    heights = data["image_hw"][:, 0].tolist()
    angles = np.stack([cobb_angles_many(p, heights) for p in pts])        # (18, N, 3)
    rows = []
    for label, idx, how in subsets(LOOKS):
        if how == "mean corners":
            pred = cobb_angles_many(pts[idx].mean(0), heights)
        else:
            pred = (np.median if how == "median angles" else np.mean)(angles[idx], axis=0)
        rows.append({"model": name, "weights": weights, "seed": rec.seed, "data": spec, "split": on,
                     "n_images": len(ds), "looks": label, "n_looks": len(idx), "average": how,
                     "smape": round(smape(pred, data["cobb"]), 2), "device": device, "git_commit": rec.git_commit})
    return rows


def main(argv=None) -> int:
    from spinebench.evaluation.results import append_csv_row

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", nargs="+", required=True, help="weights folders, each with a trained Cobb model")
    p.add_argument("--data", nargs="+", default=["synth"], help="data specs with vertebra landmarks")
    p.add_argument("--split-file", help="the training run's split.csv (with --on val: its validation films)")
    p.add_argument("--on", default="all", choices=["all", "train", "val", "test"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    if a.on != "all" and not a.split_file:
        p.error("--on val/train/test needs --split-file (the training run's split.csv)")
    out = Path(a.out) / f"cobb_looks_{a.device}.csv"
    for weights in a.weights:
        for spec in a.data:
            for row in bench(weights, spec, a.split_file, a.on, a.device):
                append_csv_row(out, row, COLUMNS)
                log.info("%s %s %s (%d, %s): SMAPE %.2f%%", weights, spec, row["looks"], row["n_looks"],
                         row["average"], row["smape"])
    log.info("appended to %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
