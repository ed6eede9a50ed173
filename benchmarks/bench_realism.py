"""Realism of the synthetic films: held-out AUROC of probes trained to tell them from real radiographs, and a
contact sheet of synthetic films beside real ones.

    python benchmarks/bench_realism.py --real aasce=../shared/data/aasce2019 \\
        --out benchmarks/results/realism_cpu.csv --sheet benchmarks/results/realism_sheet.png

0.5 = the probe cannot tell them apart, 1.0 = it always can (see :mod:`spinebench.evaluation.realism`). One row
per probe, with the generator version, so versions can be compared; there is no target. Use the training split
of the real data set only (the AASCE folder here holds no other). Nothing is downloaded; the real data set must
be on disk.
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLUMNS = ("probe", "auroc", "auroc_lo", "auroc_hi", "train_loss", "generator_version", "synthetic", "real",
           "n_train_synthetic", "n_train_real", "n_heldout_synthetic", "n_heldout_real", "input_size", "epochs",
           "seed", "seconds", "threads", "git_commit", "error")


def _sample(records: list[dict], n: int | None, seed: int) -> list[dict]:
    if n is None or n >= len(records):
        return records
    return random.Random(seed).sample(records, n)


def sheet(path: str, synthetic: list[dict], real: list[dict], per_row: int = 8, height: int = 420) -> Path:
    """Two rows: ``per_row`` synthetic films above ``per_row`` real ones, at one height, captioned."""
    from spinebench.data.synth import tile_sheet
    from spinebench.io import load_image

    tiles = []
    for tag, recs in (("synthetic", synthetic), ("real", real)):
        for r in recs[:per_row]:
            cobb = max(float(r.get(k) or 0) for k in ("cobb_pt", "cobb_mt", "cobb_tl"))
            tiles.append((load_image(r["path"])[0], f"{tag} {r['image_id'].split('/')[-1][:18]} {cobb:.0f}d"))
    return tile_sheet(path, tiles, height=height, cols=per_row)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real", default=None, help="real data spec (default: aasce=<the default AASCE path>)")
    ap.add_argument("--synthetic", default="synth", help="synthetic data spec (default: the embedded set)")
    ap.add_argument("--n", type=int, default=None, help="at most this many films per source (default: all)")
    ap.add_argument("--size", type=int, nargs=2, default=(192, 80), metavar=("H", "W"))
    ap.add_argument("--epochs", type=int, default=8, help="CNN probe epochs")
    ap.add_argument("--probes", nargs="+", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="append the rows to this CSV (written with a header when new)")
    ap.add_argument("--sheet", help="write the contact sheet (PNG) here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from spinebench.data import synth
    from spinebench.data.sources import load_records
    from spinebench.errors import SpinebenchError
    from spinebench.evaluation.realism import PROBES, realism_probe
    from spinebench.evaluation.results import append_csv_row, git_commit
    from spinebench.paths import default_aasce_path

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    real_spec = args.real or f"aasce={default_aasce_path()}"
    base = {"generator_version": synth.GENERATOR_VERSION if args.synthetic.startswith("synth") else "",
            "synthetic": args.synthetic, "real": real_spec, "epochs": args.epochs, "seed": args.seed,
            "threads": torch.get_num_threads(), "git_commit": git_commit(), "error": ""}
    try:
        synthetic = _sample(load_records(args.synthetic), args.n, args.seed)
        real = _sample(load_records(real_spec), args.n, args.seed)
        if args.sheet:
            print(f"wrote {sheet(args.sheet, synthetic, real)}")
        rows = [{**base, **r} for r in realism_probe(synthetic, real, args.probes or PROBES, tuple(args.size),
                                                      args.epochs, seed=args.seed)]
    except (SpinebenchError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        rows = [{**base, "probe": p, "error": f"{type(e).__name__}: {e}"} for p in args.probes or PROBES]
    for r in rows:
        print(f"{r['probe']:>5}: AUROC {r.get('auroc', '-')} [{r.get('auroc_lo', '-')}, {r.get('auroc_hi', '-')}] "
              f"(synthetic v{r['generator_version']} vs {r['real']}; held out {r.get('n_heldout_synthetic', '-')} + "
              f"{r.get('n_heldout_real', '-')} films, {r.get('seconds', '-')} s) {r['error']}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        for r in rows:
            append_csv_row(out, r, COLUMNS)
        print(f"wrote {out}")
    return 0 if not any(r["error"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
