"""What a Cobb-angle model learns in a CPU run's minute: validation SMAPE against training seconds.

Each configuration (model x input size x time budget x seed) is one ``run_all`` of that model alone on the quick
profile's data and split (the same code as ``python -m spinebench run-all``), its Cobb settings replaced. The
validation SMAPE of the last epoch is what a setting is chosen by; the test SMAPE is written beside it only so
the table says what the chosen one gave. A constant baseline is in every CSV: the training films' mean angles
predicted for every validation film.

    python benchmarks/bench_cobb_quick.py --models cobb_regress_resnet10t --sizes 160x64 192x96 --budgets 60 \\
        --seeds 0 1
Results: ``benchmarks/results/cobb_quick_<device>.csv`` (appended).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

log = logging.getLogger("bench_cobb_quick")

COLUMNS = ["model", "input_size", "time_budget_s", "seed", "data", "device", "precision", "steps", "train_seconds",
           "val_smape", "val_mae", "test_smape", "baseline_val_smape", "git_commit"]


def constant_baseline(data: list[str], split_seed: int = 0) -> float:
    """Validation SMAPE of predicting the training split's mean (PT, MT, TL) angles for every film."""
    from spinebench.cobb import smape
    from spinebench.engine.profiles import get_profile
    from spinebench.engine.runner import _split_records

    quick = get_profile("quick")
    records = _split_records(data, None, "patient", split_seed, [quick.cobb_model], quick.cache_side)[0]

    def angles(split):
        return np.array([[r["cobb_pt"], r["cobb_mt"], r["cobb_tl"]] for r in records
                         if r["split"] == split and r.get("landmarks") is not None], dtype=np.float64)

    val = angles("val")
    return smape(np.repeat(angles("train").mean(0, keepdims=True), len(val), 0), val)


def one(model: str, size: tuple[int, int], budget: float, seed: int, data: list[str], device: str, work: Path) -> dict:
    from spinebench.engine.profiles import get_profile
    from spinebench.engine.runner import run_all

    quick = get_profile("quick")
    prof = replace(quick, cobb_model=model, cobb=replace(quick.cobb, image_size=size, time_budget_s=budget))
    run_dir = run_all(data=data, profile=prof, models=[model], device=device, seeds=[seed], out=work / "runs",
                      results=work / "results", weights_dir=work / "weights", progress=False, report=False)
    m = json.loads((run_dir / "metrics" / f"{model}-s{seed}.json").read_text())
    row, last = m["row"], m["history"][-1]
    steps = sum(int(h.get("images", 0)) for h in m["history"]) // prof.cobb.batch_size  # full batches only
    return {"model": model, "input_size": f"{size[0]}x{size[1]}", "time_budget_s": budget, "seed": seed,
            "data": " ".join(data), "device": row.get("device"), "precision": row.get("precision"),
            "steps": steps, "train_seconds": row.get("train_seconds"),
            "val_smape": round(float(last["val_smape"]), 2), "val_mae": round(float(last["val_mae"]), 2),
            "test_smape": round(float(row["smape"]), 2) if row.get("smape") not in (None, "") else "",
            "git_commit": row.get("git_commit")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["cobb_regress_resnet10t"])
    p.add_argument("--sizes", nargs="+", default=["160x64"], help="input sizes H x W, multiples of 32")
    p.add_argument("--budgets", nargs="+", type=float, default=[60.0], help="training seconds")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--data", nargs="+", default=["synth"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in a.sizes]
    base = round(constant_baseline(a.data), 2)
    log.info("constant baseline (training mean angles): validation SMAPE %.1f%%", base)
    out = Path(a.out) / f"cobb_quick_{a.device}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    new = not out.is_file()
    with tempfile.TemporaryDirectory(prefix="spinebench-cobb-") as tmp, open(out, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            w.writeheader()
        for model in a.models:
            for size in sizes:
                for budget in a.budgets:
                    for seed in a.seeds:
                        t0 = time.perf_counter()
                        r = one(model, size, budget, seed, a.data, a.device, Path(tmp))
                        r["baseline_val_smape"] = base
                        w.writerow(r)
                        f.flush()
                        log.info("%s %s %.0f s seed %d: %s steps, validation SMAPE %.1f%% (test %s%%), %.0f s wall",
                                 model, r["input_size"], budget, seed, r["steps"], r["val_smape"], r["test_smape"],
                                 time.perf_counter() - t0)
    log.info("appended to %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
