"""How much of each implant a model's input still shows, and each model's implant AUROC by that contrast
(classifiers and detectors: a detector's implant score is its top ``Lum`` box).

Why: a quick classifier's missed implants are the smallest (``bench_implant_size.py``), but size is not what a
model sees: a 1 mm tantalum pin of a PEEK cage and a bright single screw can box alike. This script re-renders
every implant film of a synthetic set twice, with and without its hardware (``synth.render_image(...,
draw_hardware=False)``: the hardware has its own seeded stream, so the rest of the film is the same), decodes both
as a run does (the model's cache side, antialiased), shrinks both to each model's input size (area averaging; each
cell's brightest pixel for a model whose ``downsample`` is ``"max"``) and takes the largest difference in
intensity (0-1) inside the implant boxes, less the film-wide shift the metal causes (:func:`hardware_contrast`):
the hardware's contrast as the model receives it. Implant AUROC is then reported per contrast band, each band's
implant films against all films without an implant. A model that is near 1 on the visible bands and near 0.5 on
the faint one is limited by its input resolution, not by what it learnt. The same per hardware kind (the
generator's ``render.HARDWARE_KINDS``: a standalone cage, a single screw, a plate, ...; a hybrid copy's kind from
its render's side file), which says what a model has not learnt where size and contrast do not.

    python -m spinebench data synth --seed 7 --scale 0.5 --out /tmp/synth7
    python benchmarks/bench_implant_visibility.py --weights weights --data synth=/tmp/synth7 --seed 7 --scale 0.5

``--data synth`` (the default set run-all trains on, seed 0) with ``--split test`` scores its test split;
``--data hybrid:aasce=PATH`` pairs each real radiograph's hardware copy with the radiograph itself.
Implant films without a bare twin are left out of the bands and counted (``n_unmatched``): a re-rendering that
does not match the record (another seed or scale), or a real film with real hardware (AASCE's ten
post-operative films). Results:
``benchmarks/results/implant_visibility_cpu.csv`` (appended): one row per model (``input_size``: a detector's
``min_size x max_size``; each film's contrast is taken at the size that resize gives it, and shrunk as the
model shrinks it: ``max`` after the size where its ``downsample`` is the brightest-pixel shrink).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spinebench.data.render import HARDWARE_KINDS  # noqa: E402

#: contrast bands (largest intensity difference at the model's input): [lo, hi)
BANDS = ((0.0, 0.1), (0.1, 0.2), (0.2, 0.4), (0.4, 9.0))

COLUMNS = ["model", "data", "split", "input_size", "n_images", "n_implant", "n_unmatched", "auroc_all"] + \
    [f"{k}_{lo:g}" for lo, _ in BANDS for k in ("n", "auroc")] + \
    [f"{k}_{kind}" for kind in HARDWARE_KINDS for k in ("n", "auroc")] + ["weights_run", "git_commit"]


def hardware_contrast(img: np.ndarray, bare: np.ndarray, size: tuple[int, int], boxes,
                      downsample: str = "bilinear", cache_side: int | None = None) -> float:
    """What of the hardware a model with input ``size`` (H, W) receives: the largest intensity difference inside
    the implant boxes between a film and the same film without hardware, both shrunk to ``size`` (area averaging,
    or each cell's brightest pixel for a model whose ``downsample`` is ``"max"``), less the median difference in a
    ring around each box. The ring takes out the film-wide shift the hardware causes (the generator's exposure
    stretch and gamma see the bright metal too: differences of up to 0.5 far from it).

    ``cache_side``: first decode both films as a run does (``data.dataset.resize_keep_aspect``, the cache every
    model of a run reads, antialiased), as the model receives them. Why: a brightest-pixel shrink taken from the
    stored film keeps a 1 mm pin the cache has already averaged down (a real radiograph's cage: median contrast
    0.28 from the film, 0.20 through the 320 px cache, 128 x 56 by max; session 46)."""
    from spinebench.data.dataset import resize_keep_aspect
    from spinebench.data.transforms import resize

    if cache_side is not None:
        (img, scale), (bare, _) = (resize_keep_aspect(f, cache_side) for f in (img, bare))
        boxes = [[v * scale for v in b[:4]] for b in boxes]
    pair = torch.from_numpy(np.stack([img, bare]).astype(np.float32))[:, None]
    if downsample == "max":  # the model's own shrink
        small = torch.stack([resize(film, tuple(size), "max") for film in pair])[:, 0]
    else:
        small = F.interpolate(pair, size=tuple(size), mode="area")[:, 0]
    diff = (small[0] - small[1]).numpy()
    sy, sx = size[0] / img.shape[0], size[1] / img.shape[1]
    best = 0.0
    for b in boxes:
        x0, y0 = int(np.floor(b[0] * sx)), int(np.floor(b[1] * sy))
        x1, y1 = int(np.ceil(b[2] * sx)) + 1, int(np.ceil(b[3] * sy)) + 1
        m = max(2, (y1 - y0) // 2, (x1 - x0) // 2)  # a ring as wide as half the box
        wy, wx = max(0, y0 - m), max(0, x0 - m)
        win = diff[wy:y1 + m, wx:x1 + m]
        inside = np.zeros(win.shape, bool)
        inside[max(0, y0) - wy:y1 - wy, max(0, x0) - wx:x1 - wx] = True
        base = float(np.median(win[~inside])) if (~inside).any() else 0.0
        best = max(best, float(np.abs(win[inside] - base).max(initial=0.0)))
    return best


def rendered_pairs(records: list[dict], seed: int, scale: float) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """image_id -> (film, film without hardware, hardware kind) for the implant films of a synthetic set whose
    re-rendering matches the record's size (another seed or scale does not; those are left out)."""
    from spinebench.data.synth import render_image

    out = {}
    for r in records:
        if not r["implant"]:
            continue
        pid, view = (int(v) for v in r["image_id"].removeprefix("synth/p").split("-"))
        img, truth = render_image(seed, pid, view, scale=scale)
        bare, _ = render_image(seed, pid, view, scale=scale, draw_hardware=False)
        if img.shape == (int(r["height"]), int(r["width"])):
            out[r["image_id"]] = (img, bare, ",".join(truth.hardware))
    return out


def hybrid_pairs(records: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """image_id -> (film, film without hardware, hardware kind) for the hardware copies of a ``hybrid:`` source:
    the bare film is the real radiograph the hardware was drawn on (``<id>+hw`` and ``<id>``, both among the
    records); the kind is what the render's side file (``data.hybrid.render_record``) names, "" without one."""
    import json

    from spinebench.io import load_image

    by_id = {r["image_id"]: r for r in records}
    out = {}
    for r in records:
        base = by_id.get(r["image_id"].removesuffix("+hw")) if r["image_id"].endswith("+hw") else None
        if base is None:
            continue
        img, bare = (np.asarray(load_image(x["path"])[0], dtype=np.float32) for x in (r, base))
        side = Path(r["path"]).with_suffix(".json")
        kind = ",".join(json.loads(side.read_text()).get("hardware", [])) if side.is_file() else ""
        if img.shape == bare.shape:
            out[r["image_id"]] = (img, bare, kind)
    return out


def input_hw(task: str, input_size: tuple[int, int], record: dict) -> tuple[int, int]:
    """(H, W) a film reaches the model at: a classifier's fixed input; a detector's ``(min_size, max_size)``
    resize that keeps the aspect (torchvision's ``GeneralizedRCNNTransform``: the short side to ``min_size``
    unless the long side would pass ``max_size``)."""
    if task != "detection":
        return input_size
    h, w = int(record["height"]), int(record["width"])
    s = min(input_size[0] / min(h, w), input_size[1] / max(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def _implant_boxes(record: dict) -> list:
    from spinebench import LABEL_MAP

    return [b[:4] for b in record.get("boxes") or [] if int(b[4]) == LABEL_MAP["Lum"]]


def band_aurocs(y: np.ndarray, p: np.ndarray, contrast: np.ndarray) -> dict:
    """Implant AUROC per contrast band: each band's implant films against every film without an implant
    (``contrast`` NaN: not measured, left out of the bands)."""
    row = {}
    for lo, hi in BANDS:
        row.update(_against_negatives(y, p, (y == 1) & (contrast >= lo) & (contrast < hi), f"{lo:g}"))
    return row


def _against_negatives(y: np.ndarray, p: np.ndarray, pos: np.ndarray, name: str) -> dict:
    """``n_<name>``, ``auroc_<name>``: the implant films ``pos`` against every film without an implant ("" with
    none of either)."""
    from spinebench.tasks.base import auroc

    sel = (y == 0) | pos
    return {f"n_{name}": int(pos.sum()),
            f"auroc_{name}": round(auroc(y[sel], p[sel]), 4) if pos.any() and (y == 0).any() else ""}


def kind_aurocs(y: np.ndarray, p: np.ndarray, kinds: list[str]) -> dict:
    """Implant AUROC per hardware kind (``render.HARDWARE_KINDS``): each kind's implant films against every film
    without an implant ("" where a kind has no film). Why: films of one size or contrast can hold different
    hardware, and the kind says what a model has not learnt (session 45: every standalone cage ranked among the
    films without hardware, single screws only where faint)."""
    kinds = np.asarray(kinds, dtype=object)
    row = {}
    for kind in HARDWARE_KINDS:
        row.update(_against_negatives(y, p, (y == 1) & (kinds == kind), kind))
    return row


def main(argv=None) -> int:
    from spinebench.data.sources import load_records
    from spinebench.data.splits import assign_splits
    from spinebench.engine.runner import decoded_dataset
    from spinebench.engine.train import predict
    from spinebench.evaluation.results import append_csv_row, git_commit
    from spinebench.tasks.base import auroc
    from spinebench.weights import trained_records

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", default="weights")
    ap.add_argument("--data", default="synth", help="synth (the default set), synth=DIR or hybrid:SPEC")
    ap.add_argument("--seed", type=int, default=0, help="synth=DIR: the generator seed the set was written with")
    ap.add_argument("--scale", type=float, default=0.5, help="synth=DIR: the film scale it was written with")
    ap.add_argument("--split", default="all", choices=["all", "train", "val", "test"],
                    help="score this split of the patient split run-all uses (seed 0); all: every film")
    ap.add_argument("--out", default=None, help="CSV (default benchmarks/results/implant_visibility_cpu.csv)")
    args = ap.parse_args(argv)
    hybrid = args.data.startswith("hybrid:")
    if not (hybrid or args.data.split("=")[0] == "synth"):
        ap.error("--data must be synth, synth=DIR or hybrid:SPEC: only those have a film without the hardware")
    recs = trained_records(args.weights)
    names = [n for n, r in recs.items() if r.task in ("classification", "detection")]
    if not names:
        ap.error(f"no classifier or detector weights in {args.weights}")
    side = max(recs[n].cache_side for n in names)
    records = load_records([args.data], max_side=side)
    if args.split != "all":
        records = [r for r in assign_splits(records, seed=0) if r["split"] == args.split]
    pairs = hybrid_pairs(records) if hybrid else rendered_pairs(records, args.seed, args.scale)
    y = np.array([int(r["implant"]) for r in records])
    data = decoded_dataset(records, side)
    out = Path(args.out or Path(__file__).resolve().parent / "results" / "implant_visibility_cpu.csv")
    kinds = [pairs[r["image_id"]][2] if r["image_id"] in pairs else "" for r in records]
    for name in names:
        rec = recs[name]
        model = rec.load("cpu")
        size = tuple(int(v) for v in rec.input_size)
        down = model.default_cfg.get("downsample", "bilinear")
        contrast = np.array([hardware_contrast(*pairs[r["image_id"]][:2], input_hw(rec.task, size, r),
                                               _implant_boxes(r), down, rec.cache_side)
                             if r["image_id"] in pairs else np.nan for r in records])
        pred = predict(model, data.with_transform(rec.transform()), torch.device("cpu"))
        p = np.asarray(pred["probs"])[:, 0]
        shown = "x".join(map(str, size)) + (f" {down}" if down != "bilinear" else "")
        row = {"model": name, "data": args.data, "split": args.split, "input_size": shown,
               "n_images": len(y), "n_implant": int(y.sum()), "n_unmatched": int(y.sum()) - len(pairs),
               "auroc_all": round(auroc(y, p), 4), **band_aurocs(y, p, contrast),
               **kind_aurocs(y, p, kinds),
               "weights_run": rec.run_id or "", "git_commit": git_commit()}
        append_csv_row(out, row, COLUMNS)
        print({k: row[k] for k in COLUMNS if k not in ("data", "git_commit")}, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
