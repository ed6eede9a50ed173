"""What the corner regression's offset gain (``CobbTask.calibrate``) gives on films a run did not choose it on.

For each weights folder: the gain is chosen on the run's own validation films exactly as `run-all` chooses it
(:meth:`spinebench.tasks.cobb.CobbTask.calibrate`: its two validation looks), then the SMAPE of all 18 looks is
measured on each ``--data`` at gain 1 (the model as trained), at the chosen gain, and at the gain that would have
been best on those films (hindsight, for the record only). Works on weights saved before the gain existed (they
load at gain 1): the choice is re-made from their validation films.

    python benchmarks/bench_cobb_gain.py --weights weights --data synth=/tmp/synth7 aasce=PATH
    python benchmarks/bench_cobb_gain.py --weights /tmp/fc1/weights /tmp/fc2/weights --data synth --on test

The validation films are the run's (its record's split file, relative to the weights folder's parent, the run's
working directory; or ``--split-file``) of the data the model was trained on (``--train-data``, default synth).

Results: ``benchmarks/results/cobb_gain_<device>.csv`` (appended; one row per weights x data).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

log = logging.getLogger("bench_cobb_gain")

COLUMNS = ["model", "weights", "weights_run", "epochs", "data", "split", "n_images", "gain", "val_smape_gain1",
           "val_smape", "smape_gain1", "smape", "hindsight_gain", "hindsight_smape", "device", "git_commit"]


def bench(weights: str, data: list[str], on: str, train_data: str, split_file: str | None, device: str) -> list[dict]:
    import spinebench as sb
    from spinebench.engine.train import TrainSettings
    from spinebench.errors import SpinebenchError
    from spinebench.measure import cobb_models
    from spinebench.tasks import get_task
    from spinebench.tasks.cobb import GAINS, LOOKS, LandmarkInput, smape_by_gain, stack_inputs

    from bench_cobb_looks import films

    name = cobb_models(weights)[0]
    model, rec = sb.load_trained(name, weights=weights, device=device)
    if not hasattr(model, "offset_gain"):
        raise SpinebenchError(f"{name} in {weights} has no offset gain (only the corner regression has one)")
    split = split_file or str(Path(weights).resolve().parent / rec.split_file)
    if not Path(split).is_file():
        raise SpinebenchError(f"split file not found: {split} (give --split-file)")
    chosen = get_task("cobb").calibrate(model, films(train_data, rec.cache_side, split, "val"),
                                        TrainSettings(batch_size=8), device)
    rows = []
    for spec in data:
        ds = films(spec, rec.cache_side, split if on != "all" else None, on)
        scores = smape_by_gain(model, stack_inputs(ds, LandmarkInput.of(model)), device, 8, LOOKS)
        best = int(np.argmin(scores))
        rows.append({"model": name, "weights": weights, "weights_run": rec.run_id or "",
                     "epochs": rec.extra.get("best_epoch", ""), "data": spec, "split": on, "n_images": len(ds),
                     "gain": chosen["offset_gain"], "val_smape_gain1": round(chosen["val_smape_gain1"], 2),
                     "val_smape": round(chosen["val_smape"], 2), "smape_gain1": round(scores[GAINS.index(1.0)], 2),
                     "smape": round(scores[GAINS.index(chosen["offset_gain"])], 2), "hindsight_gain": GAINS[best],
                     "hindsight_smape": round(scores[best], 2), "device": device, "git_commit": rec.git_commit})
    return rows


def main(argv=None) -> int:
    from spinebench.errors import SpinebenchError
    from spinebench.evaluation.results import append_csv_row

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", nargs="+", required=True, help="weights folders, each with a trained Cobb regression")
    p.add_argument("--data", nargs="+", default=["synth"], help="data specs with vertebra landmarks to score")
    p.add_argument("--on", default="all", choices=["all", "train", "val", "test"],
                   help="which split of the run's split file to score (default all films of each --data)")
    p.add_argument("--train-data", default="synth", help="the data spec the models were trained on")
    p.add_argument("--split-file", help="the training run's split.csv (default: each weights record's own)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    out = Path(a.out) / f"cobb_gain_{a.device}.csv"
    for weights in a.weights:
        try:
            rows = bench(weights, a.data, a.on, a.train_data, a.split_file, a.device)
        except SpinebenchError as e:
            print(f"bench_cobb_gain: {e}", file=sys.stderr)
            return 2
        for row in rows:
            append_csv_row(out, row, COLUMNS)
            log.info("%s %s (%d films): gain %.2f, SMAPE %.2f -> %.2f%% (hindsight %.2f at %.2f)", weights,
                     row["data"], row["n_images"], row["gain"], row["smape_gain1"], row["smape"],
                     row["hindsight_smape"], row["hindsight_gain"])
    log.info("appended to %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
