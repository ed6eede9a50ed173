"""How long does :func:`spinebench.io.load_image` take on realistic inputs (CPU)?

Cases: the largest real CR radiograph among the installed pydicom-data files (uncompressed) and its JPEG 2000
lossless twin, and a generated 2500 x 1000 16-bit PNG and 8-bit JPEG (the size of a full-spine radiograph).
One row per case goes to ``benchmarks/results/loader_cpu.csv``; a failing case becomes an ``error`` row.

    python benchmarks/bench_loader.py [--repeats 20] [--out benchmarks/results/loader_cpu.csv]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spinebench.io import load_image  # noqa: E402

COLUMNS = ("case", "file", "format", "transfer_syntax", "height", "width", "file_mb", "repeats", "p50_ms", "p90_ms",
           "min_ms", "device", "cpu_count", "python", "numpy", "pillow", "pydicom", "git_commit", "error")


def local_dicom_test_files() -> list[Path]:
    """pydicom's bundled test files and those of installed external sources (pydicom-data), by listing their
    folders: pydicom's own ``get_testdata_files`` would try to download the missing ones."""
    from pydicom.data import data_manager

    folders = [Path(data_manager.DATA_ROOT) / "test_files"]
    for source in data_manager.external_data_sources().values():
        if getattr(source, "data_path", None):
            folders.append(Path(source.data_path))
    return sorted(p for folder in folders if folder.is_dir() for p in folder.rglob("*.dcm"))


def largest_cr_dicoms() -> list[Path]:
    """The largest local CR file and, where there is one, its JPEG 2000 twin."""
    import pydicom

    crs = []
    for p in local_dicom_test_files():
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:
            continue
        if ds.get("Modality") == "CR":
            crs.append(p)
    if not crs:
        return []
    biggest = max(crs, key=lambda p: (p.stat().st_size, p.name))
    out = [biggest]
    twin = biggest.with_name(biggest.name.replace("_UNCR", "_J2KR").replace("_UNCI", "_J2KI"))
    if twin != biggest and twin.is_file():
        out.append(twin)
    return out


def generated_images(folder: Path) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:2500, 0:1000]
    base = (np.sin(y / 80.0) * np.cos(x / 60.0) + 1) * 1500 + rng.normal(0, 60, (2500, 1000))
    png = folder / "spine_2500x1000_16bit.png"
    Image.fromarray(np.clip(base, 0, 4095).astype(np.uint16)).save(png)
    jpg = folder / "spine_2500x1000_8bit.jpg"
    Image.fromarray(np.clip(base / 16, 0, 255).astype(np.uint8)).save(jpg, quality=90)
    return [png, jpg]


def time_case(path: Path, repeats: int) -> dict:
    img, meta = load_image(path)  # warm-up (imports, plugin discovery, file cache)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        load_image(path)
        times.append((time.perf_counter() - t0) * 1000)
    return {"format": meta["format"], "transfer_syntax": meta["transfer_syntax"] or "", "height": img.shape[0],
            "width": img.shape[1], "p50_ms": f"{np.percentile(times, 50):.1f}",
            "p90_ms": f"{np.percentile(times, 90):.1f}", "min_ms": f"{min(times):.1f}"}


def environment() -> dict:
    import PIL
    import pydicom

    from spinebench.evaluation.results import git_commit

    commit = git_commit()
    return {"device": "cpu", "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "pillow": PIL.__version__, "pydicom": pydicom.__version__, "git_commit": commit}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "loader_cpu.csv"))
    args = ap.parse_args(argv)

    env = environment()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("real_cr_dicom", p) for p in largest_cr_dicoms()] + \
                [("generated", p) for p in generated_images(Path(tmp))]
        for case, path in cases:
            row = {"case": case, "file": path.name, "file_mb": f"{path.stat().st_size / 1e6:.2f}",
                   "repeats": args.repeats, **env, "error": ""}
            try:
                row.update(time_case(path, args.repeats))
            except Exception as e:  # one failing case must not hide the others
                row["error"] = f"{type(e).__name__}: {e}"
            rows.append(row)
            print(f"{row['file']:32s} {row.get('height', '')}x{row.get('width', '')} "
                  f"p50 {row.get('p50_ms', '-')} ms  p90 {row.get('p90_ms', '-')} ms {row['error']}")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")
    return 0 if all(not r["error"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
