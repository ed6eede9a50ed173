"""Pictures and short texts of a prediction, for people: boxes, Grad-CAM panels, Cobb overlays, summary rows.

Pure functions of a result dict (``Predictor.analyze``) and the model's view; nothing here runs a model.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from spinebench import DISCLAIMER, FINDINGS, LABEL_NAMES
from spinebench.cobb import curve_span
from spinebench.gradcam import upsample

# colours (RGB) of the two findings, used for boxes and table badges
FINDING_COLOURS = {"implant": (255, 170, 0), "scoliosis": (0, 200, 255)}
LABEL_COLOURS = {1: FINDING_COLOURS["implant"], 2: FINDING_COLOURS["scoliosis"]}


def render_model(view: np.ndarray, r: dict, extra: dict) -> np.ndarray:
    """One model's picture: boxes (detectors), Grad-CAM of both findings (classifiers), corners and Cobb lines."""
    if "error" in r:
        return caption(gray_rgb(view), r["error"])
    from spinebench.tasks import get_task

    return get_task(r["task"]).draw(view, r, extra)


def summary_rows(result: dict) -> list[list]:
    """One row per model: model, then per finding its probability and the decision at the model's threshold, then
    the time in ms (the Cobb model: its largest angle and grade in the scoliosis decision column)."""
    rows = []
    for name, r in result["models"].items():
        if r.get("task") == "cobb" and "largest" in r:
            span = curve_span(r["end_vertebrae"][r["largest_curve"]])
            rows.append([name, None, "", None, f"Cobb {r['largest']:.1f}° {span}, {r['grade']}", r.get("ms")])
            continue
        row: list = [name]
        for f in FINDINGS:
            d = r.get(f)
            if isinstance(d, dict):
                row += [d["probability"], f"{'PRESENT' if d['positive'] else 'absent'} (t={d['threshold']:.2f})"
                        + (f"; no signal: test AUROC {d['test_auroc']:.2f}" if d.get("signal") is False else "")]
            else:
                row += [None, r.get("error", "—")]
        rows.append(row + [r.get("ms")])
    return rows


SUMMARY_HEADERS = ["model", "implant p", "implant", "scoliosis p", "scoliosis", "ms"]


def agreement_text(result: dict) -> str:
    """One short paragraph: how many of the models agree, and the disclaimer."""
    a = result["agreement"]
    n = a["models"]
    if not n:
        return "No model produced a decision."
    parts = []
    for f in FINDINGS:
        k = a[f]["positive"] + a[f]["negative"]
        part = (f"no model's {f} call was better than chance on its test split" if not k else
                f"the models are **split {a[f]['positive']}-{a[f]['negative']}** on {f}" if a[f]["majority"] == "split"
                else f"**{a[f]['agree']} of {k}** models agree that {f} is **{a[f]['majority']}**")
        if a[f].get("left_out") and k:  # agreement(): calls no better than chance on the model's own test split
            part += f" ({a[f]['left_out']} more left out: no better than chance on their own test split)"
        parts.append(part)
    both = a["both"]
    k = both.get("of", n)
    tail = f"all {k} models that vote on both agree on both" if both["unanimous"] and k < n else \
        "all models agree on both findings" if both["unanimous"] else \
        f"{both['agree']} of {k} give the same decision on both findings"
    text = "; ".join(parts) + f"; {tail}."
    return text[0].upper() + text[1:] + f"\n\n*{DISCLAIMER}*"


def image_facts(result: dict) -> str:
    """The upload's technical facts (never identity) and the time taken, as one short Markdown paragraph."""
    shown = ("format", "modality", "height", "width", "bits_stored", "photometric", "window", "inverted",
             "model_view")
    facts = " · ".join(f"{k.replace('_', ' ')}: {v}" for k, v in result["image"].items()
                       if k in shown and v not in (None, "", False))
    t = result["timing_ms"]
    return f"{facts}  \nAll models: {t['total']:.0f} ms (reading the file {t['load']:.0f} ms)."


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(img, dtype=np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def gray_rgb(img: np.ndarray) -> np.ndarray:
    g = to_uint8(img)
    return np.repeat(g[..., None], 3, axis=2)


# a perceptually ordered blue -> cyan -> green -> yellow -> red map (no matplotlib dependency)
_CMAP_X = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_CMAP_RGB = np.array([[48, 18, 59], [40, 160, 230], [60, 230, 110], [250, 200, 40], [200, 20, 10]], dtype=np.float32)


def colormap(x: np.ndarray) -> np.ndarray:
    """(H, W) in [0, 1] -> (H, W, 3) float32 RGB in [0, 255]."""
    x = np.clip(x, 0, 1)
    return np.stack([np.interp(x, _CMAP_X, _CMAP_RGB[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def overlay_heatmap(img: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Grey image with a heatmap blended in where it is strong (weak regions stay readable)."""
    base = gray_rgb(img).astype(np.float32)
    a = (alpha * np.clip(heat, 0, 1) ** 0.7)[..., None]
    return (base * (1 - a) + colormap(heat) * a + 0.5).clip(0, 255).astype(np.uint8)


def _font(size: int = 12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _label(draw, xy, text: str, fill, font, anchor_bottom: bool = False) -> None:
    x, y = xy
    l, t, r, b = draw.textbbox((0, 0), text, font=font)
    w, h = r - l + 4, b - t + 4
    y0 = y - h if anchor_bottom else y
    draw.rectangle([x, y0, x + w, y0 + h], fill=(0, 0, 0))
    draw.text((x + 2, y0 + 2 - t), text, fill=fill, font=font)


def caption(rgb: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.fromarray(rgb)
    d = ImageDraw.Draw(im)
    _label(d, (2, 2), text[:80], (255, 255, 255), _font(max(10, rgb.shape[1] // 28)))
    return np.asarray(im)


#: Overlays are drawn on the view enlarged to about this height, so labels stay legible (the view itself is shown
#: as the models see it).
DISPLAY_HEIGHT = 640


def display_view(view: np.ndarray) -> tuple[np.ndarray, float]:
    """The model's view enlarged (bilinear) to about DISPLAY_HEIGHT for drawing; (image, factor)."""
    h, w = view.shape
    f = max(1.0, DISPLAY_HEIGHT / h)
    if f == 1.0:
        return view, 1.0
    t = torch.from_numpy(np.ascontiguousarray(view, dtype=np.float32))[None, None]
    big = torch.nn.functional.interpolate(t, size=(round(h * f), round(w * f)), mode="bilinear", align_corners=False)
    return big[0, 0].clamp_(0, 1).numpy(), f


def _decision_lines(d, r: dict, h: int, font, findings: Sequence[str] = FINDINGS, note: str | None = None) -> None:
    """Bottom-left (the top is under the viewer's title bar): an optional grey note, then each finding's
    probability and decision, in the finding's colour when present."""
    line = font.size + 6
    lines = ([(note, (220, 220, 220))] if note else []) + [
        (f"{f} {r[f]['probability']:.2f} no signal", (150, 150, 150)) if r[f].get("signal") is False else
        (f"{f} {r[f]['probability']:.2f} {'PRESENT' if r[f]['positive'] else 'absent'}",
         FINDING_COLOURS[f] if r[f]["positive"] else (200, 200, 200)) for f in findings]
    for i, (text, colour) in enumerate(lines):
        _label(d, (2, h - 2 - (len(lines) - 1 - i) * line), text, colour, font, anchor_bottom=True)


def cam_panel(view: np.ndarray, cams: np.ndarray | None, r: dict) -> np.ndarray:
    """Grad-CAM of both findings side by side over the model's view, titled with probability and decision."""
    from PIL import Image, ImageDraw

    big, _ = display_view(view)
    h, w = big.shape
    panels = []
    font = _font(max(11, min(18, w // 10)))
    for j, f in enumerate(FINDINGS):
        heat = upsample(cams[j], (h, w)) if cams is not None else np.zeros((h, w), np.float32)
        im = Image.fromarray(overlay_heatmap(big, heat))
        _decision_lines(ImageDraw.Draw(im), r, h, font, findings=(f,))
        panels.append(np.asarray(im))
    gap = np.zeros((h, 6, 3), np.uint8)
    return np.concatenate([panels[0], gap, panels[1]], axis=1)


def draw_boxes(view: np.ndarray, det: dict | None, r: dict) -> np.ndarray:
    """Boxes at or above the model's threshold for their class, labelled ``Lum 0.93`` / ``sco 0.71``."""
    from PIL import Image, ImageDraw

    big, k = display_view(view)
    im = Image.fromarray(gray_rgb(big))
    d = ImageDraw.Draw(im)
    h, w = big.shape
    font = _font(max(11, min(18, w // 14)))
    shown = 0
    if det is not None:
        thr = {1: r["implant"]["threshold"], 2: r["scoliosis"]["threshold"]}
        for box, label, score in zip(det["boxes"].numpy(), det["labels"].numpy(), det["scores"].numpy()):
            label = int(label)
            if label not in thr or float(score) < thr[label]:
                continue
            x0, y0, x1, y1 = [float(v) * k for v in box]
            colour = LABEL_COLOURS[label]
            d.rectangle([x0, y0, x1, y1], outline=colour, width=max(2, w // 120))
            _label(d, (x0, max(0.0, y0)), f"{LABEL_NAMES[label]} {float(score):.2f}", colour, font,
                   anchor_bottom=y0 > 3 * font.size)
            shown += 1
    _decision_lines(d, r, h, font, note=None if shown else "no box above threshold")
    return np.asarray(im)


def cobb_overlay(view: np.ndarray, extra: dict) -> np.ndarray:
    from spinebench.measure import render_overlay

    big, k = display_view(view)
    return render_overlay(big, np.asarray(extra["landmarks"]) * k, extra["cobb"])

