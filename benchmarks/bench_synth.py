"""Generation speed of the synthetic set: wall seconds for ``data synth`` (default 600 images, 2 workers).

The requirement is 600 images in under a minute on 2 cores. The machine load is recorded next to the time (a
shared machine slows every number down), and so is the CPU time the workers used, which load does not inflate as
much: ``cpu_s / workers`` is about what the wall time is on idle cores.

    python benchmarks/bench_synth.py                        # 600 images, 2 workers, into a temporary folder
    python benchmarks/bench_synth.py --n 120 --workers 1 --out benchmarks/results/synth_cpu.csv
    python benchmarks/bench_synth.py --scale 0.5            # the half-size films the quick profile renders
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLUMNS = ("images", "workers", "seed", "scale", "wall_s", "images_per_s", "cpu_s", "cpu_s_per_image", "load_before",
           "load_after", "disk_mb", "formats", "implant_share", "scoliosis_share", "generator_version",
           "device", "cpu_count", "python", "numpy", "git_commit", "error")


def environment() -> dict:
    from spinebench.evaluation.results import git_commit

    commit = git_commit()
    return {"device": "cpu", "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "git_commit": commit}


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(n: int, workers: int, seed: int, scale: float = 1.0) -> dict:
    from spinebench.data import synth

    row = {"images": n, "workers": workers, "seed": seed, "scale": scale, "generator_version": synth.GENERATOR_VERSION,
           **environment(), "error": ""}
    with tempfile.TemporaryDirectory() as tmp:
        row["load_before"] = f"{os.getloadavg()[0]:.2f}"
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        records = synth.generate(Path(tmp) / "synth", n=n, seed=seed, workers=workers, progress=False,
                                 scale=scale)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        row["load_after"] = f"{os.getloadavg()[0]:.2f}"
        disk = sum(p.stat().st_size for p in (Path(tmp) / "synth").rglob("*") if p.is_file())
    row.update(wall_s=f"{wall:.1f}", images_per_s=f"{n / wall:.1f}", cpu_s=f"{cpu:.1f}",
               cpu_s_per_image=f"{cpu / n:.3f}", disk_mb=f"{disk / 1e6:.0f}",
               formats=" ".join(f"{k}:{v}" for k, v in sorted(Counter(Path(r["path"]).suffix
                                                                     for r in records).items())),
               implant_share=f"{np.mean([r['implant'] for r in records]):.2f}",
               scoliosis_share=f"{np.mean([r['scoliosis'] for r in records]):.2f}")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0, help="film size (0.5: what the quick profile renders)")
    ap.add_argument("--out", help="append the result row to this CSV (written with a header when new)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        row = run(args.n, args.workers, args.seed, args.scale)
    except Exception as e:  # report, do not crash without a row
        row = {"images": args.n, "workers": args.workers, "seed": args.seed, "scale": args.scale, **environment(),
               "error": f"{type(e).__name__}: {e}"}
    print(f"{row['images']} images at scale {row['scale']:g}, {row['workers']} workers: {row.get('wall_s', '-')} s wall "
          f"({row.get('images_per_s', '-')} img/s), {row.get('cpu_s', '-')} s CPU, load {row.get('load_before', '-')}"
          f" -> {row.get('load_after', '-')}, {row.get('disk_mb', '-')} MB, implant {row.get('implant_share', '-')},"
          f" scoliosis {row.get('scoliosis_share', '-')} {row['error']}")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        from spinebench.evaluation.results import append_csv_row

        append_csv_row(out, row, COLUMNS)
        print(f"wrote {out}")
    return 0 if not row["error"] else 1


if __name__ == "__main__":
    sys.exit(main())
