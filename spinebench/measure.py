"""Measure Cobb angles on radiographs with a trained landmark model: the library call behind
``python -m spinebench measure`` and the demo.

    from spinebench.measure import measure, render_overlay
    rows = measure(["spine.jpg"], weights_dir="weights")
    rows[0]["pt"], rows[0]["grade"], rows[0]["landmarks"]

Every image goes through :func:`spinebench.io.load_image` (the pixel contract), then exactly the preprocessing the
model was trained with (:meth:`spinebench.weights.TrainedWeights.preprocess`: the training run's decode downscale,
then the model's input size); the predicted corners are mapped back to the file's pixels and measured by
:func:`spinebench.cobb.cobb_angles`, the same function that made the reference angles. The severity grade is that of the largest of the three angles.

These are research measurements of a model trained on one public data set (AASCE 2019), not a diagnosis.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from spinebench.cobb import (ANGLE_NAMES, VERTEBRA_NAMES, CobbResult, cobb_angles, curve_span, mean_of_looks,
                             severity_grade)
from spinebench.errors import SpinebenchError

if TYPE_CHECKING:
    from spinebench.weights import TrainedWeights

log = logging.getLogger(__name__)

_MODELS: dict[tuple, tuple] = {}


def cobb_models(weights_dir: str | os.PathLike) -> list[str]:
    """Names of the trained ``cobb`` models whose weights are present in ``weights_dir``, the most recently
    trained first (the one ``measure`` and the demo use): a quick run after a paper run measures with its own."""
    from spinebench.models import list_models
    from spinebench.weights import trained_records

    known = set(list_models(task="cobb"))
    recs = [(n, r) for n, r in trained_records(weights_dir).items() if n in known or r.task == "cobb"]
    # run ids start with the run's date and time (20261204-201500-quick): newest first, stable otherwise
    return [n for n, _ in sorted(recs, key=lambda nr: str(nr[1].run_id or ""), reverse=True)]


def load_cobb_model(weights_dir: str | os.PathLike = "weights", device: str = "cpu",
                    model: str | None = None) -> tuple["torch.nn.Module", "TrainedWeights"]:
    """(model in eval mode, its weights record), loaded once per process and kept."""
    from spinebench.weights import get_record

    wdir = Path(weights_dir)
    if not wdir.is_dir():
        raise SpinebenchError(f"weights folder {wdir} does not exist (train a Cobb model first: "
                              "python -m spinebench train cobb_vertebra_resnet34 --data aasce=PATH)")
    names = cobb_models(wdir)
    if model is None:
        if not names:
            raise SpinebenchError(f"no trained Cobb-angle model in {wdir} (train one: "
                                  "python -m spinebench train cobb_vertebra_resnet34 --data aasce=PATH)")
        model = names[0]
    elif model not in names:
        raise SpinebenchError(f"no trained weights for {model} in {wdir}; trained Cobb models there: "
                              f"{', '.join(names) or 'none'}")
    key = (str(wdir.resolve()), model, str(device))
    if key not in _MODELS:
        rec = get_record(model, wdir)
        _MODELS[key] = (rec.load(device), rec)
    return _MODELS[key]


def measure_image(model, img: np.ndarray, record: "TrainedWeights") -> tuple[np.ndarray, CobbResult]:
    """(68, 2) landmarks in ``img`` pixels and the Cobb angles, for one image in the pixel contract.

    ``record`` preprocesses ``img`` as in training; the model's input is the whole (downscaled) image resized, so
    input pixels map back to ``img`` pixels by the two axes' size ratios. The angles are the mean over the looks that
    scoring takes (zoomed, shifted, mirrored where the model takes many: :func:`spinebench.tasks.cobb.looks_of`);
    the landmarks and end vertebrae are the film's own look, the one a picture draws."""
    import torch

    from spinebench.tasks.cobb import predict_looks

    x = record.preprocess(img)[None]
    h, w = img.shape
    data = {"images": x, "to_input": torch.tensor([[x.shape[-1] / w, x.shape[-2] / h]])}
    looks = predict_looks(model, data, next(model.parameters()).device)[:, 0]
    return looks[0], mean_of_looks([cobb_angles(pts, image_height=h) for pts in looks])


def summarize(res: CobbResult) -> dict:
    """What a measurement tells a reader, the same in the CLI and the demo: the largest curve, its clinical grade,
    each curve's end vertebrae, and whether the spine is S-shaped."""
    name, big, _ = res.largest
    return {"largest": round(big, 2), "largest_curve": name, "grade": severity_grade(big),
            "end_vertebrae": {k: [VERTEBRA_NAMES[i], VERTEBRA_NAMES[j]] for k, (i, j) in res.end_vertebrae.items()},
            "s_shaped": res.s_shaped}


def measure(paths: Sequence[str | os.PathLike], weights_dir: str | os.PathLike = "weights", device: str = "cpu",
            model: str | None = None) -> list[dict]:
    """Cobb angles of each image: one dict per image.

    Keys: file, pt, mt, tl (degrees), largest (degrees), largest_curve ("pt"/"mt"/"tl"), end_vertebrae (per curve,
    e.g. {"pt": ["T6", "T12"]}), grade (none/mild/moderate/severe), s_shaped, landmarks (68 [x, y] in file
    pixels), width, height, ms (load + preprocess + model + angles), model.
    """
    from spinebench.engine.device import resolve_device
    from spinebench.io import load_image

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    # on the CPU the caller's torch thread count is kept (resolve_device would reset it to every core)
    dev = "cpu" if str(device) == "cpu" else str(resolve_device(device))
    net, record = load_cobb_model(weights_dir, dev, model)
    rows = []
    for path in paths:
        t0 = time.perf_counter()
        img, _ = load_image(path)
        pts, res = measure_image(net, img, record)
        rows.append({
            "file": str(path), "pt": round(res.pt, 2), "mt": round(res.mt, 2), "tl": round(res.tl, 2),
            **summarize(res), "landmarks": np.round(pts, 1).tolist(),
            "width": int(img.shape[1]), "height": int(img.shape[0]),
            "ms": round((time.perf_counter() - t0) * 1000, 1), "model": net.default_cfg["name"],
        })
    return rows


# ------------------------------------------------------------------------------------------- overlay
_CURVE_COLOURS = {"pt": (255, 64, 64), "mt": (64, 200, 255), "tl": (255, 200, 0)}
_CORNER_COLOUR = (0, 255, 120)


def _font(size: int):
    """Pillow's bundled font at ``size`` pixels (readable on 2000-3000 px radiographs); the bitmap one if old."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def render_overlay(image: np.ndarray, landmarks, result: CobbResult | dict | None = None) -> np.ndarray:
    """RGB uint8 picture of ``image`` with the 68 corners, each vertebra's outline, and for every curve the
    lines through its two end vertebrae (the vertebra direction the AASCE angle is measured on) with its angle.

    ``image``: (H, W) grey in [0, 1] (pixel contract) or uint8, or (H, W, 3) uint8. ``result``: a CobbResult, a
    row of :func:`measure` (its angles, which average several looks, and end vertebrae), or None (computed from the
    landmarks).
    """
    from PIL import Image, ImageDraw

    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    h, w = arr.shape[:2]
    if result is None:
        res = cobb_angles(pts, image_height=h)
    elif isinstance(result, dict):
        res = CobbResult(angles=np.array([result[k] for k in ANGLE_NAMES], dtype=np.float64),
                         end_vertebrae={k: tuple(VERTEBRA_NAMES.index(v) for v in ends)
                                        for k, ends in result["end_vertebrae"].items()},
                         s_shaped=bool(result["s_shaped"]))
    else:
        res = result
    im = Image.fromarray(np.ascontiguousarray(arr[..., :3]))
    draw = ImageDraw.Draw(im)
    lw = max(1, round(max(h, w) / 600))
    r = max(2, lw + 1)
    quads = pts.reshape(-1, 4, 2)
    for q in quads:
        outline = [tuple(q[0]), tuple(q[1]), tuple(q[3]), tuple(q[2]), tuple(q[0])]
        draw.line(outline, fill=_CORNER_COLOUR, width=max(1, lw // 2))
        for x, y in q:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=_CORNER_COLOUR)
    left = (quads[:, 0] + quads[:, 2]) / 2
    right = (quads[:, 1] + quads[:, 3]) / 2
    font = _font(max(12, round(max(h, w) / 70)))
    k_big = int(np.argmax(res.angles))
    # smallest curve first, so the largest one (the grade) is drawn on top where curves share an end vertebra
    for k in np.argsort(res.angles, kind="stable"):
        name = ANGLE_NAMES[k]
        ends = res.end_vertebrae.get(name)
        if ends is None:
            continue
        colour = _CURVE_COLOURS[name]
        width = (3 if k == k_big else 2) * lw
        for v in ends:
            c, d = (left[v] + right[v]) / 2, right[v] - left[v]
            draw.line([tuple(c - 1.1 * d), tuple(c + 1.1 * d)], fill=colour, width=width)
        v0 = ends[0]
        label = f"{res.angles[k]:.1f}\u00b0 {curve_span(ends)}"
        tx = float(min(w - 10 * font.size, right[v0, 0] + 1.2 * (right[v0, 0] - left[v0, 0])))
        draw.text((max(0.0, tx), float(left[v0, 1]) + (k - 1) * 1.2 * font.size), label, fill=colour, font=font,
                  stroke_width=max(1, font.size // 12), stroke_fill=(0, 0, 0))
    _, big, ends = res.largest
    draw.text((10, 10), f"largest {big:.1f}\u00b0 {curve_span(ends)}: {severity_grade(big)}", fill=(255, 255, 255),
              font=font, stroke_width=max(1, font.size // 12), stroke_fill=(0, 0, 0))
    return np.asarray(im, dtype=np.uint8)


# ------------------------------------------------------------------------------------------- CLI
def cmd_measure(args) -> int:
    import json

    rows = measure(args.images, weights_dir=args.weights, device=args.device, model=args.model)
    if args.overlay:
        from PIL import Image

        from spinebench.io import load_image

        out = Path(args.overlay)
        out.mkdir(parents=True, exist_ok=True)
        for row in rows:
            img, _ = load_image(row["file"])
            Image.fromarray(render_overlay(img, row["landmarks"], row)).save(out / f"{Path(row['file']).stem}_cobb.png")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    cols = ("file", "pt", "mt", "tl", "largest", "curve", "grade", "ms")
    table = [[Path(r["file"]).name, *(f"{r[c]:.1f}" for c in ("pt", "mt", "tl", "largest")),
              curve_span(r["end_vertebrae"][r["largest_curve"]]), r["grade"], f"{r['ms']:.0f}"] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(widths[i]) for i, c in enumerate(cols)))
    for t in table:
        print("  ".join(v.ljust(widths[i]) for i, v in enumerate(t)))
    print(f"angles in degrees (AASCE PT/MT/TL: PT is the largest curve wherever it lies; curve: its end vertebrae); "
          f"model {rows[0]['model']}; research use, not a diagnosis"
          if rows else "no images")
    return 0


def add_measure_command(sub) -> None:
    """``spinebench measure IMAGE... [--json] [--weights DIR]`` (registered in cli._EXTRA_COMMANDS)."""
    p = sub.add_parser("measure", help="Cobb angles (PT/MT/TL) and severity of AP spine radiographs, "
                                       "from a trained landmark model")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG/JPEG/TIFF/DICOM files")
    p.add_argument("--weights", default="weights", help="trained weights folder (default weights/)")
    p.add_argument("--model", help="which trained cobb model (default: the first in the manifest)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.add_argument("--json", action="store_true", help="print JSON (with the 68 landmarks) instead of a table")
    p.add_argument("--overlay", metavar="DIR", help="also write <image>_cobb.png overlays into DIR")
    p.set_defaults(func=cmd_measure)
