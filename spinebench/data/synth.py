"""Synthetic AP spine radiographs: the embedded default data (spec ``synth``), with exact ground truth.

Why: spinebench must run on a fresh machine with no data of its own, and no real implant radiographs are
available. The generator draws anatomy that a radiologist recognises as an AP spine radiograph (17 vertebrae T1-L5
with endplates, pedicles and spinous processes along a scoliotic curve with controlled Cobb angles, vertebral tilt
and rotation following the curve, ribs, clavicles, lungs, diaphragm, bowel gas, pelvis and sacrum) and the
acquisition around it (exposure, scatter, detector blur, quantum noise, edge-enhancing processing, collimation,
side markers, stitching seams of long-cassette films). About a third of the images carry surgical hardware, drawn by :mod:`spinebench.data.render` (the
same code that draws hardware onto real radiographs for ``hybrid:``).

Ground truth is exact because it is what was drawn: the 68 corner landmarks are the corners of the drawn bodies,
Cobb angles and the scoliosis label come from :func:`spinebench.cobb.cobb_angles` on those landmarks, ``Lum`` boxes
are the extent of each construct's drawn metal, the ``sco`` box is :func:`spinebench.cobb.scoliosis_box`.

Several images per synthetic patient (``synth/p0007``), split by patient. Files are PNG (8- and 16-bit) and DICOM
(8-bit, 12-bit, MONOCHROME1, RLE Lossless), so the DICOM path is exercised end to end. The same seed gives the same
files whatever the number of workers: every image draws from its own seeded generator.

Not real data: use it to check that code runs and learns; report results on real radiographs.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

from spinebench import SCOLIOSIS_COBB_DEG
from spinebench.cobb import cobb_angles, scoliosis_box
from spinebench.data import render
from spinebench.data.records import make_record, read_manifest, write_manifest
from spinebench.data.render import Canvas, ellipse_points
from spinebench.data.sources import register_source

log = logging.getLogger(__name__)

#: Bump when the generated images or labels change (the cached default set is keyed on it).
#: v3 moved toward the real AASCE films (benchmarks/bench_realism.py, 300 films, held-out AUROC of a probe telling
#: synthetic from real; v2 in brackets): framing closer to T1 and L5, a darker tone curve, lungs less black,
#: wider brighter ribs, a wider mediastinum, less bowel gas, softer vertebral outlines, less noise, dark
#: supraclavicular corners, stitching seams. On 300 films: histogram probe 0.96 (0.995), CNN probe 0.80 (0.88);
#: on the 600 of the default set: 0.986 (0.993), 0.93 (0.96).
#: v4: thoracic pedicle screws with their heads and rods wider apart (THORACIC_SCREW_HEAD).
GENERATOR_VERSION = 4
#: Thoracic screw heads, and so the rods of long fusions, about this many body widths out from the body's centre
#: (lumbar ones at its edge, 0.5). Not anatomy: on the ten real post-operative AASCE films the rods' brightest
#: column lies 0.54 body widths out (IQR 0.44-0.66, the annotated corners' widths). What it changes is what the
#: classifiers learn a long fusion looks like: two rods apart from the bright column with long screw bars
#: between them. Trained on such films (head at 0.8, v3 at 0.5; DenseNet-121 and ResNet-50, two seeds each, this
#: 2-core Xeon), implant AUROC on those ten real films against the 471 without hardware 0.952 / 0.916 and 0.922 /
#: 0.893 against 0.860 / 0.832 and 0.804 / 0.757; at 0.62: 0.952 / 0.861 and 0.827 / 0.785. The hybrid renders
#: on real films keep the heads at the edge (docs/results.md, session 32).
THORACIC_SCREW_HEAD = 0.8
#: Images in the default set (spec ``synth``).
DEFAULT_N = 600
DEFAULT_SEED = 0
#: Output formats and how often each is chosen (PNG the majority, every DICOM variant present).
FORMATS = ("png8", "png16", "dcm8", "dcm12", "dcm12-mono1", "dcm-rle")
FORMAT_P = (0.62, 0.1, 0.07, 0.07, 0.07, 0.07)
COMPLETE_MARKER = ".complete"

# ---------------------------------------------------------------------------------------------------------------
# anatomy tables (millimetres): C6, C7, T1..T12, L1..L5, S1

LEVELS = ("C6", "C7") + tuple(f"T{i}" for i in range(1, 13)) + tuple(f"L{i}" for i in range(1, 6)) + ("S1",)
FIRST_T = 2  # index of T1 in LEVELS; T1..L5 are LEVELS[2:19]
_BODY_H = np.array([12, 13] + list(np.linspace(15, 22, 12)) + [24, 25, 26, 26, 25, 22], dtype=float)
_BODY_W = np.array([24, 26, 28, 27, 27, 27, 28, 29, 30, 31, 33, 34, 36, 38, 40, 42, 44, 46, 49, 52], dtype=float)
# disc below each level (the last entry, below S1, unused)
_DISC = np.array([4, 4] + list(np.linspace(3.5, 6, 11)) + [7, 8, 9, 10, 10.5, 9, 0], dtype=float)
# sagittal tilt of each endplate against the beam (deg): makes endplates show as ellipses at both ends
_SAG_TILT = np.array([12, 10, 9, 8, 6, 4, 2, 0, 0, 0, 0, 2, 3, 4, 5, 6, 9, 13, 18, 25], dtype=float)
# rib shape per thoracic level: initial heading (deg below horizontal), lateral reach (x chest half-width)
_RIB_HEAD = np.array([-38, -28, -18, -12, -8, -4, 0, 4, 8, 14, 28, 38], dtype=float)
_RIB_REACH = np.array([0.42, 0.6, 0.73, 0.82, 0.88, 0.93, 0.97, 1.0, 1.0, 0.96, 0.62, 0.45])
# lumbar transverse process length (x body width)
_TP_LEN = np.array([0.25, 0.33, 0.42, 0.34, 0.28])

# ---------------------------------------------------------------------------------------------------------------
# patients and views


@dataclass
class Patient:
    index: int
    scale: float
    body_h: np.ndarray
    body_w: np.ndarray
    disc: np.ndarray
    knots: list  # [(vertebra index 0..16, angle deg)] before balancing
    pattern: str
    hardware: str | None  # None, "auto" (render picks) or a render.HARDWARE_KINDS name
    preop_first: bool
    correction: float  # post-operative curve reduction factor (long fusions)
    chest_hw: float
    waist_hw: float
    hip_hw: float
    pelvis_w: float
    diaphragm: float  # dome height in vertebra units (index of the level, fractional)
    heart: float
    gas: float
    rot_gain: float
    mediastinum: float
    tp_len: float
    n_views: int


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *[int(k) for k in keys]])


def _curve_knots(rng: np.random.Generator, severity: str) -> tuple[str, list]:
    """Knots of the tilt function: (vertebra index 0=T1..16=L5, tilt in degrees); end vertebrae sit on knots."""
    if severity == "normal":
        amp = rng.uniform(0.3, 2.2)
        return "normal", [(0, rng.normal(0, amp)), (int(rng.integers(4, 8)), rng.normal(0, amp)),
                          (int(rng.integers(10, 14)), rng.normal(0, amp)), (16, rng.normal(0, amp))]
    lo, hi = {"mild": (10, 25), "moderate": (25, 45), "severe": (45, 80)}[severity]
    c = rng.uniform(lo, hi)
    pattern = str(rng.choice(["thoracic", "thoracolumbar", "lumbar", "double", "triple"],
                             p=[0.3, 0.2, 0.15, 0.25, 0.1]))
    comp = lambda: rng.uniform(0.15, 0.45) * c  # noqa: E731 - compensatory curves, smaller than the main one
    if pattern == "thoracic":
        sgn = 1 if rng.random() < 0.85 else -1  # right thoracic curves are the common ones
        e1, e2 = int(rng.integers(4, 7)), int(rng.integers(10, 13))
        k = [(0, c / 2 - comp()), (e1, c / 2), (e2, -c / 2), (16, -c / 2 + comp())]
    elif pattern == "thoracolumbar":
        sgn = 1 if rng.random() < 0.35 else -1
        e1, e2 = int(rng.integers(7, 10)), int(rng.integers(13, 16))
        k = [(0, c / 2 - comp()), (e1, c / 2), (e2, -c / 2), (16, -c / 2 + 0.5 * comp())]
    elif pattern == "lumbar":
        sgn = 1 if rng.random() < 0.3 else -1
        e1, e2 = int(rng.integers(10, 13)), int(rng.integers(15, 17))
        k = [(0, c / 2 - comp()), (int(rng.integers(4, 7)), c / 2 - comp()), (e1, c / 2), (e2, -c / 2)]
    elif pattern == "double":
        sgn = 1 if rng.random() < 0.85 else -1
        c2 = c * rng.uniform(0.7, 1.05)
        e1, e2, e3 = int(rng.integers(4, 7)), int(rng.integers(10, 13)), int(rng.integers(15, 17))
        k = [(0, c / 2 - comp()), (e1, c / 2), (e2, -c / 2), (e3, -c / 2 + c2)]
    else:  # triple: proximal thoracic, main thoracic, lumbar
        sgn = 1 if rng.random() < 0.85 else -1
        c0, c2 = c * rng.uniform(0.35, 0.7), c * rng.uniform(0.6, 0.95)
        e1, e2, e3 = int(rng.integers(4, 6)), int(rng.integers(10, 12)), int(rng.integers(15, 17))
        k = [(0, c / 2 - c0), (e1, c / 2), (e2, -c / 2), (e3, -c / 2 + c2)]
    return pattern, [(i, sgn * a) for i, a in k]


def sample_patient(seed: int, index: int) -> Patient:
    """Everything that stays the same across one synthetic patient's images."""
    rng = _rng(seed, 1, index)
    severity = str(rng.choice(["normal", "mild", "moderate", "severe"], p=[0.34, 0.22, 0.24, 0.20]))
    pattern, knots = _curve_knots(rng, severity)
    scale = rng.uniform(0.86, 1.08)
    jitter = lambda: rng.normal(1, 0.035, len(LEVELS))  # noqa: E731
    hw = None
    if rng.random() < 0.36:
        long_ok = severity in ("moderate", "severe") and rng.random() < 0.5
        hw = "long_fusion" if long_ok else "auto"
    n_views = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.35, 0.2, 0.15]))
    return Patient(
        index=index, scale=scale, body_h=_BODY_H * scale * jitter(), body_w=_BODY_W * scale * jitter(),
        disc=_DISC * scale * rng.uniform(0.85, 1.15) * jitter(), knots=knots, pattern=pattern, hardware=hw,
        preop_first=hw is not None and n_views > 1 and rng.random() < 0.25,
        correction=rng.uniform(0.3, 0.6) if hw == "long_fusion" else 1.0,
        chest_hw=rng.uniform(105, 140) * scale, waist_hw=rng.uniform(95, 135) * scale,
        hip_hw=rng.uniform(130, 170) * scale, pelvis_w=rng.uniform(0.9, 1.1) * scale,
        diaphragm=rng.uniform(8.3, 10.3), heart=rng.uniform(0.8, 1.25), gas=rng.uniform(0.1, 0.7),
        rot_gain=rng.uniform(0.5, 1.2), mediastinum=rng.uniform(32, 48), tp_len=rng.uniform(0.6, 1.1), n_views=n_views,
    )


def has_hardware(pat: Patient, view: int) -> bool:
    """Whether this view shows the patient's hardware (the first view of some is the pre-operative one)."""
    return pat.hardware is not None and not (pat.preop_first and view == 0)


def image_format(seed: int, patient: int, view: int) -> str:
    """The file format of one image (one of FORMATS), drawn from its own seeded generator."""
    return str(_rng(seed, 4, patient, view).choice(FORMATS, p=FORMAT_P))


def image_plan(n: int, seed: int) -> list[tuple[int, int]]:
    """(patient, view) for each of the n images: patients in order, each with its number of views."""
    out: list[tuple[int, int]] = []
    p = 0
    while len(out) < n:
        pat = sample_patient(seed, p)
        out.extend((p, k) for k in range(pat.n_views))
        p += 1
    return out[:n]


# ---------------------------------------------------------------------------------------------------------------
# spine geometry


@dataclass
class Spine:
    """The drawn spine in image pixels: corners (20, 4, 2) C6..S1 (TL, TR, BL, BR), tilt, rotation, frame."""

    corners: np.ndarray
    tilt: np.ndarray  # radians, per level (mid-body)
    rotation: np.ndarray  # radians, axial rotation per level
    center_x: np.ndarray  # x of the body centre per level
    center_y: np.ndarray
    ppm: float  # pixels per mm
    width: int
    height: int
    midline_x: float  # x of the torso midline (pixels)
    path: np.ndarray  # (M, 2) centre line, px

    @property
    def landmarks(self) -> np.ndarray:
        """68 (x, y) corners of T1..L5 in AASCE order."""
        return self.corners[FIRST_T:FIRST_T + 17].reshape(68, 2)


def _tilt_function(knots_s: np.ndarray, knots_a: np.ndarray):
    """theta(s) through the knots with zero slope at each (so end vertebrae are the most tilted)."""
    def theta(s):
        s = np.asarray(s, dtype=float)
        j = np.clip(np.searchsorted(knots_s, s) - 1, 0, len(knots_s) - 2)
        s0, s1 = knots_s[j], knots_s[j + 1]
        t = np.clip((s - s0) / np.maximum(s1 - s0, 1e-9), 0, 1)
        w = (1 - np.cos(np.pi * t)) / 2
        return knots_a[j] + (knots_a[j + 1] - knots_a[j]) * w
    return theta


def build_spine(pat: Patient, rng: np.random.Generator, corrected: bool = False, scale: float = 1.0) -> Spine:
    """Lay the vertebrae along the curve (in mm), then frame the image around them (in pixels).

    ``scale`` sizes the film (800-1200 px tall at 1); the anatomy and framing, drawn from ``rng`` before any pixel
    count, are the same at every scale.
    """
    h, w, d = pat.body_h, pat.body_w, pat.disc
    # arc position of each body centre, from the top of C6
    tops = np.concatenate([[0.0], np.cumsum(h[:-1] + d[:-1])])
    centers = tops + h / 2
    corr = pat.correction if corrected else 1.0
    idx = np.array([k for k, _ in pat.knots], dtype=float)
    ang = np.radians([a for _, a in pat.knots]) * corr * rng.uniform(0.92, 1.08)
    ks = centers[FIRST_T + idx.astype(int)]
    theta = _tilt_function(ks, ang)
    # balance: shift all tilts so that L5 sits within a few cm of plumb below T1
    s = np.arange(0.0, tops[-1] + h[-1] + 0.5, 0.5)
    target = rng.normal(0, 8)
    delta = rng.normal(0, math.radians(1.0))
    seg = (s >= centers[FIRST_T]) & (s <= centers[FIRST_T + 16])
    for _ in range(4):
        th = theta(s[seg]) + delta
        f = np.sum(np.sin(th)) * 0.5 - target
        delta -= f / max(np.sum(np.cos(th)) * 0.5, 1e-6)
    th_all = theta(s) + delta
    x = np.concatenate([[0.0], np.cumsum(np.sin(th_all[:-1]) * 0.5)])
    y = np.concatenate([[0.0], np.cumsum(np.cos(th_all[:-1]) * 0.5)])

    def at(sq):
        return np.interp(sq, s, x), np.interp(sq, s, y), theta(sq) + delta

    n = len(LEVELS)
    jit = rng.normal(0, math.radians(0.8), n)
    corners = np.zeros((n, 4, 2))
    tilts = np.zeros(n)
    for i in range(n):
        ww = w[i]
        for row, sq, wf in ((0, centers[i] - h[i] / 2, 0.98), (1, centers[i] + h[i] / 2, 1.0)):
            px, py, t = at(sq)
            t = t + jit[i] + rng.normal(0, math.radians(0.4))
            ux, uy = math.cos(t), -math.sin(t)
            corners[i, 2 * row] = (px - ww * wf / 2 * ux, py - ww * wf / 2 * uy)
            corners[i, 2 * row + 1] = (px + ww * wf / 2 * ux, py + ww * wf / 2 * uy)
        tilts[i] = at(centers[i])[2] + jit[i]
    cx, cy = corners.mean(axis=1).T
    # axial rotation follows the lateral deviation from the T1-L5 line, toward the convexity
    a, b = FIRST_T, FIRST_T + 16
    line_x = cx[a] + (cy - cy[a]) * (cx[b] - cx[a]) / (cy[b] - cy[a])
    rot = np.radians(np.clip(0.55 * pat.rot_gain * (cx - line_x), -32, 32)) + rng.normal(0, 0.02, n)

    # framing (mm): some neck above T1, sacrum and iliac crests below L5
    top_mm = rng.uniform(10, 40)
    bottom_mm = rng.uniform(15, 70)
    y_top = corners[FIRST_T, :2, 1].min() - top_mm
    y_bot = corners[FIRST_T + 16, 2:, 1].max() + bottom_mm
    span = y_bot - y_top
    H = int(int(rng.integers(800, 1201)) * scale) // 2 * 2
    ppm = H / span
    mid = 0.5 * (cx[FIRST_T] + cx[-1]) + rng.normal(0, 3)
    xs = corners[:, :, 0]
    need = (max(xs.max() - mid, mid - xs.min()) + 55) * 2 * ppm
    W = int(np.clip(max(H * rng.uniform(0.32, 0.5), need), 320 * scale, 640 * scale)) // 2 * 2  # real films: 0.3-0.47
    x_off = W / 2 - mid * ppm + rng.normal(0, 0.03 * W)
    # keep the spine inside with a margin
    lo, hi = xs.min() * ppm + x_off, xs.max() * ppm + x_off
    x_off += max(0, 0.08 * W - lo) - max(0, hi - 0.92 * W)
    y_off = -y_top * ppm

    def to_px(xm, ym):
        return xm * ppm + x_off, ym * ppm + y_off

    corners_px = np.stack(to_px(corners[..., 0], corners[..., 1]), axis=-1)
    path = np.stack(to_px(x, y), axis=1)
    cxp, cyp = corners_px.mean(axis=1).T
    return Spine(corners=corners_px, tilt=tilts, rotation=rot, center_x=cxp, center_y=cyp, ppm=ppm, width=W,
                 height=H, midline_x=float(mid * ppm + x_off), path=path)


# ---------------------------------------------------------------------------------------------------------------
# drawing


def _frame(corners: np.ndarray):
    tl, tr, bl, br = corners
    c = corners.mean(axis=0)
    u = (tr + br - tl - bl) / 2
    w = float(np.hypot(*u))
    u = u / w
    v = np.array([-u[1], u[0]])
    hgt = float(abs(np.dot((bl + br - tl - tr) / 2, v)))
    return c, u, v, w, hgt


def _body_outline(corners: np.ndarray, waist: float) -> np.ndarray:
    """Body outline through the 4 corners, sides drawn in with a waist."""
    tl, tr, bl, br = corners
    _, u, _, w, _ = _frame(corners)
    t = np.linspace(0, 1, 9)[1:-1, None]
    right = tr + t * (br - tr) - waist * w * np.sin(np.pi * t) * u
    left = bl + t * (tl - bl) + waist * w * np.sin(np.pi * t) * u
    return np.vstack([tl, tr, right, br, bl, left])


def _gauss(a: np.ndarray, sigma: float, mode: str = "reflect") -> np.ndarray:
    """Gaussian blur in float32 (the generator's hot path): a 3-sigma kernel; wide ones on a half-size copy."""
    a = np.asarray(a, dtype=np.float32)
    if sigma <= 2.5 or min(a.shape) < 16:
        return ndi.gaussian_filter(a, sigma, truncate=3.0, mode=mode)
    return _lowres_blur(a, sigma, f=2)


def _rim(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Cortical shell: bright just inside the edge of a filled shape."""
    return np.clip(mask - _gauss(mask, sigma), 0, None) * 2.0 * mask


def _lowres_blur(img: np.ndarray, sigma: float, f: int = 4) -> np.ndarray:
    """A wide Gaussian blur done on a reduced copy (wide blurs at full size cost too much)."""
    H, W = img.shape
    small = np.asarray(Image.fromarray(img.astype(np.float32)).reduce(f))
    small = ndi.gaussian_filter(small, sigma / f, truncate=3.0, mode="nearest")
    return np.array(Image.fromarray(small).resize((W, H), Image.BILINEAR))


def _draw_vertebrae(sp: Spine, pat: Patient, rng, bodies: Canvas, plates: Canvas, post: Canvas) -> None:
    ppm = sp.ppm
    for i, name in enumerate(LEVELS):
        c, u, v, w, h = _frame(sp.corners[i])
        lumbar = name.startswith("L")
        if name == "S1":
            bodies.polygon(_body_outline(sp.corners[i], 0.0), 0.6)
            plates.line(sp.corners[i, :2], max(1.0, 1.0 * ppm), 0.8)
            continue
        bodies.polygon(_body_outline(sp.corners[i], 0.05 if lumbar else 0.035), 1.0)
        # endplates: seen slightly obliquely, an ellipse of dense bone
        lw = max(1.0, 1.0 * ppm)
        for row, sgn in ((0, -1), (1, 1)):
            p0, p1 = sp.corners[i, 2 * row], sp.corners[i, 2 * row + 1]
            mid = (p0 + p1) / 2
            ry = max(0.6, 0.5 * w * math.sin(math.radians(_SAG_TILT[i] + rng.normal(0, 2))))
            ang = math.atan2(p1[1] - p0[1], p1[0] - p0[0])
            ring = ellipse_points(mid - sgn * 0.3 * ry * v, 0.5 * w * 0.97, ry, ang, 36)
            plates.line(np.vstack([ring, ring[:1]]), lw, 0.7)
            plates.line(np.array([p0, p1]), lw, 1.0)
        # posterior elements, shifted toward the concavity by the axial rotation
        phi = sp.rotation[i]
        sh = -math.sin(phi) * ppm
        if name in ("C6", "C7"):
            post.polygon(_teardrop(c + 22 * sh * u + 0.1 * h * v, c + 30 * sh * u + 0.9 * h * v, 0.1 * w, u),
                         0.6)
            continue
        prx, pry = (0.07, 0.22) if lumbar else (0.085, 0.24)
        for side in (-1, 1):
            pc = c + (side * 0.31 * w * math.cos(phi) + 25 * sh) * u - 0.14 * h * v
            narrow = 1 - 0.45 * max(0.0, side * math.sin(phi))  # the concave pedicle turns edge-on
            rx = prx * w * narrow
            ang = math.atan2(u[1], u[0])
            post.ellipse(pc, rx + 0.4, pry * h, ang, 0.8)
            post.ellipse(pc, max(0.3, rx * 0.55), pry * h * 0.7, ang, 0.45)
            # laminae toward the spinous process
            sp_top = c + 45 * sh * u + 0.3 * h * v
            post.line(np.array([pc + 0.9 * pry * h * v + side * 0.2 * rx * u, sp_top]), max(1.0, 0.045 * w), 0.35)
            if lumbar:
                j = i - (FIRST_T + 12)
                tl_len = _TP_LEN[j] * w * pat.tp_len
                base = c + side * 0.36 * w * u - 0.1 * h * v + 22 * sh * u
                tip = base + side * (0.14 * w + tl_len) * u - 0.04 * h * v
                t1 = 0.15 * h
                post.polygon(np.array([base - t1 * v, tip - 0.4 * t1 * v, tip + 0.5 * t1 * v, base + 1.2 * t1 * v]),
                             0.28)
            else:
                base = c + side * 0.42 * w * u - 0.1 * h * v + 20 * sh * u
                tip = base + side * 0.28 * w * u - 0.22 * h * v
                post.line(np.array([base, tip]), max(1.0, 0.2 * h), 0.5)
        if lumbar:
            top = c + 50 * sh * u + 0.05 * h * v
            bot = c + 62 * sh * u + 0.78 * h * v
            post.polygon(_teardrop(top, bot, 0.14 * w, u), 0.6)
        else:
            top = c + 45 * sh * u + 0.15 * h * v
            bot = c + 60 * sh * u + 1.15 * h * v
            post.polygon(_teardrop(top, bot, 0.1 * w, u), 0.55)


def _column(sp: Spine, W: int, H: int) -> np.ndarray:
    """The vertebral column as one soft band (posterior elements and ligaments fill the disc spaces)."""
    cv = Canvas(0, 0, W, H, 1, mode="L")
    c = np.stack([sp.center_x, sp.center_y], axis=1)
    widths = [_frame(k)[3] for k in sp.corners]
    for i in range(len(c) - 1):
        cv.line(c[i:i + 2], 0.95 * (widths[i] + widths[i + 1]) / 2, 1.0)
    return _gauss(cv.result(), 3.0 * sp.ppm)


def _teardrop(top: np.ndarray, bottom: np.ndarray, width: float, u: np.ndarray) -> np.ndarray:
    t = np.linspace(0, 1, 12)
    r = width / 2 * np.sin(np.pi * np.clip(t * 1.15, 0, 1)) ** 0.7 * (1 - 0.5 * t)
    axis = bottom - top
    pts = top + t[:, None] * axis
    return np.vstack([pts + r[:, None] * u, (pts - r[:, None] * u)[::-1]])


def _rotate(vec: np.ndarray, angle: float) -> np.ndarray:
    """Rotate screen vectors by angle (radians; positive turns (1, 0) toward (0, -1), the vertebra tilt sense)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([c * vec[..., 0] + s * vec[..., 1], -s * vec[..., 0] + c * vec[..., 1]], axis=-1)


def _draw_ribs(sp: Spine, pat: Patient, rng, ribs: Canvas, ant: Canvas) -> None:
    ppm = sp.ppm
    for j in range(12):
        i = FIRST_T + j
        c, u, v, w, h = _frame(sp.corners[i])
        reach = pat.chest_hw * _RIB_REACH[j] * ppm * rng.uniform(0.96, 1.04)
        width = (6.0 + 3.0 * min(j, 6) / 6) * ppm * pat.scale
        for side in (-1, 1):
            start = c + side * (0.5 * w + 0.08 * w) * u - 0.2 * h * v
            lat = reach - side * (start[0] - sp.midline_x)  # how far this rib reaches to the chest wall
            lat = max(lat, 25 * ppm)
            t = np.linspace(0, 1, 28)
            psi0 = math.radians(_RIB_HEAD[j] + rng.normal(0, 3))
            psi1 = math.radians(40 if j < 10 else 30)
            psi = psi0 + (psi1 - psi0) * t ** 1.6 + math.radians(22) * np.clip((t - 0.85) / 0.15, 0, 1) ** 2
            dx, dy = np.cos(psi), np.sin(psi)
            xs, ys = np.cumsum(dx), np.cumsum(dy)
            k = lat / max(xs.max(), 1e-6)
            pts = np.stack([side * xs * k, ys * k], axis=1)
            pts = start + _rotate(pts, 0.6 * sp.tilt[i])
            wf = 0.8 if j < 2 else 1.0
            n3 = len(pts) // 3
            for a, b, f in ((0, n3 + 1, 0.7), (n3, 2 * n3 + 1, 0.95), (2 * n3, len(pts), 1.15)):
                ribs.line(pts[a:b], width * wf * f * rng.uniform(0.9, 1.1), 1.0)
            if j < 10:  # the anterior rib runs back toward the midline, lower, fainter
                end = pts[-3]
                L = max(10 * ppm, abs(end[0] - sp.midline_x) - (40 + 2 * j) * ppm)
                tt = np.linspace(0, 1, 12)[:, None]
                drop = math.tan(math.radians(22 + 1.5 * j)) * L
                apts = end + np.hstack([-side * L * tt, drop * (1 - (1 - tt) ** 1.6)])
                ant.line(apts, width * 1.3, 1.0)
    # clavicles: from the sternal ends near T2-T3 out and up toward the shoulders
    c1 = sp.corners[FIRST_T + 1].mean(axis=0)
    y0 = c1[1] - rng.uniform(15, 35) * ppm
    for side in (-1, 1):
        t = np.linspace(0, 1, 16)
        x = sp.midline_x + side * (20 + 120 * t) * ppm * pat.scale
        y = y0 - (38 * t ** 0.8 - 6 * np.sin(np.pi * t)) * ppm * pat.scale
        ribs.line(np.stack([x, y], axis=1), 12 * ppm * pat.scale, 1.0)


def _draw_pelvis(sp: Spine, pat: Patient, rng, ilium: Canvas, sacrum: Canvas) -> None:
    c, u, v, w, h = _frame(sp.corners[-1])  # S1
    ppm = sp.ppm * pat.pelvis_w
    tilt = 0.4 * sp.tilt[-1] + rng.normal(0, math.radians(1.5))
    pu = np.array([math.cos(tilt), -math.sin(tilt)])
    pv = np.array([math.sin(tilt), math.cos(tilt)])
    origin = c - 0.5 * h * v

    def P(pts):
        pts = np.asarray(pts, dtype=float)
        return origin + ppm * (pts[:, :1] * pu + pts[:, 1:] * pv)

    sac = [(-25, 0), (25, 0), (52, 6), (58, 22), (46, 58), (24, 95), (9, 118), (-9, 118), (-24, 95), (-46, 58),
           (-58, 22), (-52, 6)]
    sacrum.polygon(P(sac), 1.0)
    for k, (yy, xx, r) in enumerate(((32, 23, 5.0), (52, 20, 4.4), (70, 16, 3.8), (86, 12, 3.2))):
        for side in (-1, 1):
            sacrum.ellipse(P([(side * xx, yy)])[0], r * ppm, r * ppm * 0.8, -tilt, 0.35)
    crest = rng.uniform(-8, 6)
    for side in (-1, 1):
        il = [(38, 12), (44, -8), (68, -32 + crest), (98, -42 + crest), (124, -36 + crest), (140, -18 + crest),
              (146, 6), (138, 40), (122, 70), (96, 94), (64, 96), (46, 72), (40, 44)]
        pts = np.array([(side * x, y) for x, y in il])
        ilium.polygon(P(render.smooth_path(pts, 5)), 1.0)
        crest_line = render.smooth_path(pts[1:7], 6)
        wobble = np.cumsum(rng.normal(0, 0.6, crest_line.shape), axis=0)  # the crest is thick and uneven
        for k in range(2):
            ilium.line(P(crest_line + (k - 0.5) * wobble), rng.uniform(4, 8) * ppm, 1.5)
        brim = np.array([(side * 46, 62), (side * 74, 84), (side * 104, 118), (side * 124, 160)])
        ilium.line(P(render.smooth_path(brim, 6)), 2.0 * ppm, 2.0)
        sij = render.smooth_path(np.array([(side * 40, 8), (side * 46, 38), (side * 46, 72)]), 5)
        ilium.line(P(sij), 2.0 * ppm, 1.5)


def _soft_tissue(sp: Spine, pat: Patient, rng, f: int = 4) -> dict[str, np.ndarray]:
    """Smooth densities at 1/f size: body thickness, lungs, bowel gas, liver (upsampled by the caller)."""
    H, W = sp.height, sp.width
    h, w = (H + f - 1) // f, (W + f - 1) // f
    ppm = sp.ppm
    yy = (np.arange(h) + 0.5) * f - 0.5
    xx = (np.arange(w) + 0.5) * f - 0.5
    X, Y = np.meshgrid(xx, yy)
    cy = sp.center_y
    lev = lambda k: cy[FIRST_T + k]  # noqa: E731 - y of a thoracic/lumbar level by index 0=T1
    # torso half-width along y
    ky = np.array([lev(0) - 40 * ppm, lev(5), lev(11), lev(14), cy[-1] + 30 * ppm])
    kw = np.array([pat.chest_hw * 0.85, pat.chest_hw * 1.12, pat.waist_hw * 1.12, pat.waist_hw,
                   pat.hip_hw]) * ppm + 18 * ppm
    half = np.interp(yy, ky, kw)[:, None]
    mid = sp.midline_x
    body = np.clip(1 - ((X - mid) / half) ** 2, 0, 1) ** 0.3
    # above the lung apices only the neck is thick: the supraclavicular corners of a real film are dark
    neck = np.clip(1 - ((X - mid) / (pat.chest_hw * 0.45 * ppm)) ** 2, 0, 1) ** 0.5
    above = np.clip((lev(0) - yy) / (30 * ppm), 0, 1)[:, None]
    body = body * (1 - above) + np.minimum(body, 0.35 + 0.65 * neck) * above
    # spine x for each row
    order = np.argsort(sp.path[:, 1])
    spx = np.interp(yy, sp.path[order, 1], sp.path[order, 0])[:, None]
    medc = 0.55 * spx + 0.45 * mid
    # lungs: rounded apices, the mediastinum around the spine, the heart sitting on the left dome
    apex = lev(0) - rng.uniform(15, 35) * ppm
    dome_r = np.interp(pat.diaphragm, np.arange(17), cy[FIRST_T:FIRST_T + 17])
    dome_l = dome_r + rng.uniform(8, 22) * ppm
    chest = np.interp(yy, ky[:3], kw[:3] - 14 * ppm)[:, None]
    rel = np.abs(X - medc) / np.maximum(chest, 1)  # 0 at the mediastinum, 1 at the chest wall
    top = apex + 35 * ppm * ((rel - 0.5) / 0.5) ** 2
    dx = np.abs(X - mid) / np.maximum(chest, 1)
    dome = np.where(X < mid, dome_r, dome_l)
    dia = dome + 30 * ppm * ((dx - 0.5) / 0.5) ** 2 + 50 * ppm * np.clip(dx - 0.8, 0, None) / 0.2
    # mediastinum: a band around the spine, the aortic knob, the heart (an ellipse on the left dome)
    widen = np.clip((Y - lev(0)) / (lev(9) - lev(0)), 0, 1)
    band = np.abs(X - medc) < (pat.mediastinum * (0.8 + 0.45 * widen) + 6 * np.sin(Y / (37 * ppm))) * ppm
    hrx, hry = rng.uniform(55, 70) * ppm * pat.heart, rng.uniform(60, 80) * ppm * pat.heart
    hx, hy = mid + rng.uniform(0.2, 0.45) * hrx, dome_l - rng.uniform(0.45, 0.7) * hry
    heart = ((X - hx) / hrx) ** 2 + ((Y - hy) / hry) ** 2 < 1
    knob = ((X - medc - 24 * ppm) ** 2 + (Y - lev(3)) ** 2) < (17 * ppm) ** 2
    inside = ~(band | heart | knob) & (np.abs(X - mid) < chest) & (Y > top)
    lung = (inside & (Y < dia)).astype(np.float32) + 0.3 * (inside & (Y >= dia) & (Y < dia + 35 * ppm))
    lung = _gauss(lung, 7 * ppm / f)
    # vessels: branching-looking texture, denser toward the hila
    # vessels: lines that fan out from each hilum (noise smooth along the radius, sharp across the angle;
    # its zero crossings are then radial, branching lines)
    vessels = np.zeros_like(lung)
    for side in (-1, 1):
        hx, hy = medc + side * 20 * ppm, lev(5)
        ang = np.arctan2(Y - hy, X - hx)
        rad = np.hypot(X - hx, Y - hy) / (25 * ppm)
        grid = _gauss(rng.standard_normal((180, 48), dtype=np.float32), 1.0)
        grid = ndi.gaussian_filter1d(grid, 3.0, axis=1)
        grid /= grid.std() + 1e-6
        coords = np.stack([(ang + np.pi) / (2 * np.pi) * 179, np.clip(rad * 4, 0, 47)])
        vt = ndi.map_coordinates(grid, coords, order=1, mode="wrap")
        fade = np.exp(-rad / 5.0)
        vessels += np.exp(-(vt / 0.18) ** 2) * fade * ((X - medc) * side > 0)
    vessels *= lung
    # bowel gas: colon frame plus small bowel, and the stomach bubble under the left dome
    gas = Canvas(0, 0, w, h, 1)
    sc = 1.0 / f

    def blob(x, y, rx, ry, ang, val=1.0):
        gas.ellipse((x * sc, y * sc), rx * sc, ry * sc, ang, val, 20)

    wx = pat.waist_hw * ppm
    if rng.random() < 0.8:
        sx, sy = mid + 0.45 * wx, dome_l + rng.uniform(15, 30) * ppm
        blob(sx, sy, rng.uniform(22, 38) * ppm, rng.uniform(12, 22) * ppm, rng.normal(0, 0.3), 1.0)
    paths = [((mid - 0.72 * wx, cy[-1] + 20 * ppm), (mid - 0.66 * wx, lev(12))),
             ((mid - 0.6 * wx, lev(12)), (mid, lev(14) + 10 * ppm)),
             ((mid, lev(14)), (mid + 0.62 * wx, lev(11))),
             ((mid + 0.72 * wx, lev(11)), (mid + 0.7 * wx, cy[-1] + 20 * ppm))]
    for (x0, y0), (x1, y1) in paths:
        for t in np.linspace(0, 1, 7):
            if rng.random() < 0.75 * pat.gas:
                blob(x0 + t * (x1 - x0) + rng.normal(0, 8) * ppm, y0 + t * (y1 - y0) + rng.normal(0, 8) * ppm,
                     rng.uniform(8, 22) * ppm, rng.uniform(6, 16) * ppm, rng.uniform(0, np.pi),
                     rng.uniform(0.4, 1.0))
    for _ in range(int(rng.integers(0, 8) * pat.gas)):
        blob(mid + rng.normal(0, 0.35) * wx, lev(15) + rng.uniform(-20, 60) * ppm, rng.uniform(4, 11) * ppm,
             rng.uniform(4, 10) * ppm, 0.0, rng.uniform(0.3, 0.8))
    g = gas.result()
    # stool: small bubbles of gas inside the colon segments
    mottle = _gauss(rng.standard_normal((h, w), dtype=np.float32), 0.9 * ppm / f + 0.3)
    mottle = np.clip(mottle / (mottle.std() + 1e-6), 0, None)
    g = _gauss(g * np.clip(0.35 + 0.6 * mottle, 0.0, 1.5), 1.0 * ppm / f + 0.3)
    liver = np.clip((dia + 40 * ppm - Y) / (-30 * ppm), 0, 1) * (X < mid + 25 * ppm) * np.clip(
        (lev(14) - Y) / (40 * ppm), 0, 1)
    liver = _gauss(liver.astype(np.float32), 10 * ppm / f)
    psoas = np.zeros_like(body)
    for side in (-1, 1):
        frac = np.clip((Y - lev(11)) / (cy[-1] - lev(11)), 0, 1)
        edge = spx + side * (0.5 * 40 + 55 * frac) * ppm
        psoas += ((side * (X - edge) < 0) & (side * (X - spx) > 0) & (Y > lev(11)) & (Y < cy[-1] + 30 * ppm))
    psoas = _gauss(psoas.astype(np.float32), 3 * ppm / f)
    pelvic = np.clip((Y - (cy[-1] - 35 * ppm)) / (60 * ppm), 0, 1) * body
    # the beam crosses lung in front of and behind the mediastinum too: the whole thorax is less dense
    thorax = _gauss(((Y > apex) & (Y < dia)).astype(np.float32), 12 * ppm / f) * body
    return {"body": body, "lung": lung, "pelvic": pelvic, "thorax": thorax, "vessels": vessels, "gas": g * body,
            "liver": liver * body,
            "psoas": psoas * body}


def _up(a: np.ndarray, W: int, H: int) -> np.ndarray:
    return np.asarray(Image.fromarray(a.astype(np.float32)).resize((W, H), Image.BILINEAR))


@dataclass
class Truth:
    landmarks: np.ndarray
    boxes: list
    cobb: np.ndarray
    scoliosis: int
    implant: int
    ppm: float
    hardware: list  # construct kinds


def render_image(seed: int, patient: int, view: int, *, scale: float = 1.0, layers: bool = False,
                 draw_hardware: bool = True):
    """Draw one image: returns (img float32 (H, W) in [0, 1], Truth[, layers dict when asked]).

    ``scale`` < 1 renders the film smaller (``build_spine``): the same patient, anatomy, framing, labels and
    hardware; the detector blur and quantum noise, set per pixel, shrink with it. The texture, noise and
    acquisition draws after the first full-size random field differ (they consume a generator seeded per film).
    ``draw_hardware=False``: the same film with its hardware left out (a fused spine stays corrected; the truth
    then has no implant): what the hardware adds to a film, for ``benchmarks/bench_implant_visibility.py``. The
    hardware has its own random stream, so the rest of the film is drawn the same.
    """
    pat = sample_patient(seed, patient)
    rng = _rng(seed, 2, patient, view)
    hardware = has_hardware(pat, view)
    sp = build_spine(pat, rng, corrected=hardware and pat.hardware == "long_fusion", scale=scale)
    H, W, ss = sp.height, sp.width, 2

    bodies, plates, post, ribs, ant, ilium, sacrum = (Canvas(0, 0, W, H, ss, mode="L") for _ in range(7))
    _draw_vertebrae(sp, pat, rng, bodies, plates, post)
    _draw_ribs(sp, pat, rng, ribs, ant)
    _draw_pelvis(sp, pat, rng, ilium, sacrum)
    B, P, Po = bodies.result(), plates.result(), post.result()
    R, A, Il, Sa = ribs.result(), ant.result(), ilium.result(), sacrum.result()
    cort = 1.0 * sp.ppm
    tex = _gauss(rng.standard_normal((H, W), dtype=np.float32), 1.0 + 0.8 * sp.ppm)
    tex /= tex.std() + 1e-6
    st = _soft_tissue(sp, pat, rng)
    soft = (0.5 * st["body"] - rng.uniform(0.2, 0.28) * st["lung"] * (0.6 + 0.4 * st["body"])
            + 0.06 * st["vessels"] - rng.uniform(0.02, 0.06) * st["gas"] + 0.025 * st["liver"]
            + 0.012 * st["psoas"] + 0.1 * st["pelvic"] - rng.uniform(0.06, 0.11) * st["thorax"])
    soft, body, lung = _up(soft, W, H), _up(st["body"], W, H), _up(st["lung"], W, H)
    # bone contrast is highest over the lungs and lowest under thick soft tissue (scatter, beam hardening)
    over_lung = 0.3 + 0.7 * np.clip(lung, 0, 1)
    Bk = rng.uniform(0.01, 0.025)
    spine = (B * (Bk + 0.01 + 0.004 * tex) + 0.045 * _rim(B, cort) + 0.012 * P + 0.1 * _rim(Po, 0.8 * sp.ppm) + 0.035 * Po
             + rng.uniform(0.04, 0.06) * _column(sp, W, H))
    ribs = (0.06 * R + 0.09 * _rim(R, 0.8 * sp.ppm) + 0.025 * A + 0.04 * _rim(A, 1.2 * sp.ppm)) * over_lung
    pelvis = (np.minimum(Il, 1) * (0.03 + 0.003 * tex) + 0.05 * np.clip(Il - 1, 0, 1)
              + 0.03 * _rim(np.clip(Il - 1, 0, 1), 1.5 * sp.ppm)
              + _gauss(Sa, 2 * sp.ppm) * (0.03 + 0.004 * tex))
    bone = _gauss(spine + ribs + pelvis, 0.35 * sp.ppm)  # bone edges are not razor sharp
    dens = soft + 0.55 * bone * (0.8 + 0.2 * body)

    # acquisition: exposure (film-like curve), scatter, heel effect, detector blur, quantum noise
    # a digital detector's log image is close to linear in attenuation; a mild S keeps the ends from clipping
    center = rng.uniform(0.4, 0.5)
    spread = rng.uniform(0.3, 0.45)
    img = 1 / (1 + np.exp(-(dens - center) / spread))
    scatter = rng.uniform(0.05, 0.25)
    img = img * (1 - scatter) + scatter * _lowres_blur(img, 25 * sp.ppm)
    img *= np.float32(1) + np.float32(rng.uniform(-0.06, 0.06)) * np.linspace(-0.5, 0.5, H, dtype=np.float32)[:, None]
    lo, hi = np.quantile(img[::3, ::3], [0.002, 0.998])
    img = np.clip((img - lo) / (hi - lo), 0, 1)
    blur = rng.uniform(0.7, 1.5) * scale
    img = _gauss(img, blur)
    sigma = rng.uniform(0.0007, 0.0025) * scale
    noise = _gauss(rng.standard_normal((H, W), dtype=np.float32), 0.8)
    img = img + noise * sigma / 0.26 * (0.6 + 0.5 * img)

    lm = sp.landmarks
    boxes: list = []
    kinds: list = []
    if hardware and draw_hardware:
        hw_rng = _rng(seed, 3, patient)  # the same construct on every post-operative image of a patient
        kind = None if pat.hardware == "auto" else pat.hardware
        img, hw_boxes, constructs = render.add_hardware(np.clip(img, 0, 1), lm, hw_rng, kind=kind,
                                                        s1=sp.corners[-1], allow_long=False,
                                                        thoracic_head=THORACIC_SCREW_HEAD)
        boxes += [_clip_box(b, W, H) + [1] for b in hw_boxes]
        kinds = [c.kind for c in constructs]

    # processing as a CR/DR station does it: dynamic-range compression and edge enhancement
    drc = rng.uniform(0.35, 0.75)
    img = img - drc * (_lowres_blur(img, 25 * sp.ppm) - img.mean())
    um_r, um_g = rng.uniform(2, 6) * sp.ppm, rng.uniform(0.2, 0.9)
    img = img + um_g * (img - _lowres_blur(img, um_r, f=2))
    lo, hi = np.quantile(img[::3, ::3], [rng.uniform(0.001, 0.01), rng.uniform(0.995, 0.9995)])
    # like the real radiographs: midtones darker than a plain stretch, the brightest parts short of white
    img = np.clip((img - lo) / (hi - lo), 0, 1) ** rng.uniform(1.3, 2.0) * rng.uniform(0.78, 1.0)
    img = _stitch(img, rng)
    img = _collimate(img, rng)
    img = _markers(img, rng, sp.ppm)
    img = np.clip(img, 0, 1).astype(np.float32)

    res = cobb_angles(lm, image_height=H)
    sco = int(res.largest[1] >= SCOLIOSIS_COBB_DEG)
    if sco:
        boxes.append(_clip_box(scoliosis_box(lm, res), W, H) + [2])
    truth = Truth(landmarks=lm, boxes=boxes, cobb=res.angles, scoliosis=sco, implant=int(bool(kinds)),
                  ppm=sp.ppm, hardware=kinds)
    if layers:
        return img, truth, {"bodies": B, "spine": sp}
    return img, truth


def _clip_box(b, W: int, H: int) -> list[float]:
    x0, y0, x1, y1 = b[:4]
    return [round(float(np.clip(x0, 0, W)), 2), round(float(np.clip(y0, 0, H)), 2),
            round(float(np.clip(x1, 0, W)), 2), round(float(np.clip(y1, 0, H)), 2)]


def _stitch(img: np.ndarray, rng) -> np.ndarray:
    """A seam where two detector panels were stitched: a thin line and an exposure step across the film.

    Many real long-cassette AP films (a third of the AASCE ones, by eye) are two or three exposures joined: a
    horizontal line with a brightness step at it is part of how such a film looks, and no finding.
    """
    if rng.random() > 0.35:
        return img
    H = img.shape[0]
    y = int(rng.uniform(0.3, 0.65) * H)
    img = img.copy()
    img[y:] = img[y:] * np.float32(rng.uniform(0.88, 1.1)) + np.float32(rng.uniform(-0.04, 0.04))
    t = max(1, int(round(rng.uniform(1, 3) * H / 1000)))
    img[y - t:y + t] += np.float32(rng.choice([-1, 1]) * rng.uniform(0.05, 0.15))
    return img


def _collimate(img: np.ndarray, rng) -> np.ndarray:
    """Shutter edges: unexposed (white) or masked black borders, slightly rotated, with a soft penumbra."""
    if rng.random() > 0.5:
        return img
    H, W = img.shape
    Y, X = np.mgrid[0:H, 0:W].astype(np.float32)
    ang = rng.normal(0, 0.012)
    Xr = X * math.cos(ang) - Y * math.sin(ang)
    Yr = X * math.sin(ang) + Y * math.cos(ang)
    m = np.ones_like(img)
    if rng.random() < 0.7:
        a, b = rng.uniform(0, 0.07) * W, rng.uniform(0, 0.07) * W
        m *= np.clip(Xr - a, 0, 1) * np.clip(W - b - Xr, 0, 1)
    if rng.random() < 0.4:
        m *= np.clip(H * (1 - rng.uniform(0, 0.05)) - Yr, 0, 1)
    m = _gauss(m, rng.uniform(0.5, 2.0))
    outside = rng.choice([0.0, rng.uniform(0.85, 1.0)])
    return img * m + outside * (1 - m)


_FONT_CACHE: dict[int, ImageFont.ImageFont] = {}


def _markers(img: np.ndarray, rng, ppm: float) -> np.ndarray:
    """A lead side marker (L or R, bright) and sometimes a few letters of burnt-in text."""
    if rng.random() > 0.75:
        return img
    H, W = img.shape
    size = int(np.clip(rng.uniform(10, 18) * ppm, 10, 60))
    font = _FONT_CACHE.get(size) or _FONT_CACHE.setdefault(size, ImageFont.load_default(size=size))
    layer = Image.new("L", (W, H), 0)
    d = ImageDraw.Draw(layer)
    text = str(rng.choice(["L", "R", "L", "R", "PA", "AP"]))
    x = int(rng.choice([rng.uniform(0.03, 0.15), rng.uniform(0.8, 0.92)]) * W)
    y = int(rng.choice([rng.uniform(0.01, 0.06), rng.uniform(0.3, 0.7), rng.uniform(0.9, 0.95)]) * H)
    d.text((x, y), text, fill=255, font=font)
    if rng.random() < 0.3:
        d.rectangle([x - 3, y - 2, x + size * len(text) * 0.7 + 4, y + size * 1.15], outline=255, width=2)
    if rng.random() < 0.35:
        small = _FONT_CACHE.get(size // 2) or _FONT_CACHE.setdefault(size // 2, ImageFont.load_default(size=size // 2))
        d.text((int(0.55 * W), int(0.008 * H)), str(rng.choice(["STANDING", "ERECT", "SPINE AP", "WHOLE SPINE"])),
               fill=255, font=small)
    m = _gauss(np.asarray(layer, np.float32) / 255.0, 0.6)
    return img * (1 - m) + rng.uniform(0.9, 1.0) * m


# ---------------------------------------------------------------------------------------------------------------
# writing


def write_image(img: np.ndarray, path_stem: str | os.PathLike, fmt: str, uid_key: str = "synth",
                pixel_mm: float | None = None, patient: str = "SYNTH") -> Path:
    """Write a [0, 1] image in one of FORMATS; returns the file written (``.png`` or ``.dcm`` appended).

    Every variant decodes (with :func:`spinebench.io.load_image`) to the same picture up to its quantisation:
    DICOMs carry a window covering their full stored range, MONOCHROME1 stores inverted values.
    """
    img = np.clip(np.asarray(img, dtype=np.float64), 0, 1)
    stem = Path(path_stem)
    if fmt == "png8":
        path = stem.with_suffix(".png")
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(path, compress_level=3)
        return path
    if fmt == "png16":
        path = stem.with_suffix(".png")
        Image.fromarray(np.round(img * 65535).astype(np.uint16)).save(path, compress_level=3)
        return path
    if fmt not in FORMATS:
        raise ValueError(f"unknown image format {fmt!r}; one of {FORMATS}")
    bits = 8 if fmt == "dcm8" else 12
    arr = np.round(img * (2 ** bits - 1)).astype(np.uint8 if bits == 8 else np.uint16)
    mono1 = fmt == "dcm12-mono1"
    if mono1:
        arr = (2 ** bits - 1 - arr).astype(arr.dtype)
    path = stem.with_suffix(".dcm")
    _write_dicom(path, arr, bits, mono1, rle=fmt == "dcm-rle", uid_key=uid_key, pixel_mm=pixel_mm,
                 patient=patient)
    return path


def _write_dicom(path: Path, arr: np.ndarray, bits: int, mono1: bool, rle: bool, uid_key: str,
                 pixel_mm: float | None, patient: str) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

    sop_class = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    uid = generate_uid(entropy_srcs=["spinebench-synth", uid_key])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["spinebench-synth-study", uid_key])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["spinebench-synth-series", uid_key])
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX", "SPINE", "AP"
    ds.PatientName, ds.PatientID = f"SYNTHETIC^{patient}", patient
    ds.StudyDate = ds.ContentDate = "20240101"
    ds.Manufacturer = "spinebench synthetic"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.Rows, ds.Columns = arr.shape
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    ds.WindowCenter, ds.WindowWidth = 2 ** (bits - 1), 2 ** bits  # maps [0, 2**bits - 1] onto the display range
    if pixel_mm:
        ds.PixelSpacing = [f"{pixel_mm:.6f}", f"{pixel_mm:.6f}"]
    ds.PixelData = arr.tobytes()
    if rle:
        ds.compress(RLELossless, arr, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)


def _render_job(job: tuple) -> dict:
    seed, patient, view, out, scale = job
    img, truth = render_image(seed, patient, view, scale=scale)
    fmt = image_format(seed, patient, view)
    pid = f"p{patient:04d}"
    path = write_image(img, Path(out) / "images" / f"{pid}_{view}", fmt, uid_key=f"{seed}/{pid}/{view}",
                       pixel_mm=1.0 / truth.ppm, patient=f"SYNTH-{pid}")
    return make_record(
        image_id=f"synth/{pid}-{view}", patient_id=f"synth/{pid}", source="synth",
        path=str(path.relative_to(out)), implant=truth.implant, scoliosis=truth.scoliosis,
        cobb_pt=float(truth.cobb[0]), cobb_mt=float(truth.cobb[1]), cobb_tl=float(truth.cobb[2]),
        width=img.shape[1], height=img.shape[0], boxes=truth.boxes,
        landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in truth.landmarks],
    )


def generate(out: str | os.PathLike, n: int = DEFAULT_N, seed: int = DEFAULT_SEED, workers: int | None = None,
             progress: bool = True, scale: float = 1.0) -> list[dict]:
    """Write n synthetic radiographs and ``out/manifest.csv`` (patient-level splits); return the records.

    ``scale`` sizes the films (:func:`render_image`; 1: 800-1200 px tall, 0.5: 400-600 px).
    """
    from spinebench.data.splits import assign_splits
    from spinebench.errors import SynthSettingsError

    if n < 1:
        raise SynthSettingsError(f"n must be at least 1, not {n}")
    if not 0.1 <= scale <= 4:
        raise SynthSettingsError(f"scale must be between 0.1 and 4, not {scale:g}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    marker = out / COMPLETE_MARKER
    if marker.exists():
        marker.unlink()
    jobs = [(seed, p, k, str(out), float(scale)) for p, k in image_plan(n, seed)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(jobs), desc="synth", unit="img", disable=not log.isEnabledFor(logging.INFO))
        except ImportError:  # pragma: no cover - tqdm is a dependency
            bar = None
    records = []
    if workers == 1:
        for j in jobs:
            records.append(_render_job(j))
            if bar:
                bar.update()
    else:
        # fork keeps start-up cheap; each job seeds its own generator, so results do not depend on workers
        ctx = get_context("fork") if "fork" in _start_methods() else get_context()
        with ctx.Pool(workers) as pool:
            for rec in pool.imap(_render_job, jobs, chunksize=4):
                records.append(rec)
                if bar:
                    bar.update()
    if bar:
        bar.close()
    assign_splits(records, seed=seed)
    write_manifest(records, out / "manifest.csv")
    marker.write_text(_marker_text(n, seed, scale))
    return read_manifest(out / "manifest.csv")


def _marker_text(n: int, seed: int, scale: float) -> str:
    """What a finished set's completion marker says: the generator's version and code (``render.code_fingerprint``
    of this module and ``render``), and the set's settings. A cached set is reused only when it says the same."""
    code = render.code_fingerprint(sys.modules[__name__], render)
    return f"generator v{GENERATOR_VERSION} code {code} n={n} seed={seed} scale={scale:g}\n"


def _start_methods() -> list[str]:
    import multiprocessing

    return multiprocessing.get_all_start_methods()


# ---------------------------------------------------------------------------------------------------------------
# contact sheet


def contact_sheet(path: str | os.PathLike, source: str | os.PathLike | None = None, n: int = 24,
                  seed: int = DEFAULT_SEED, height: int = 420, cols: int = 12) -> Path:
    """A grid of n images with a caption each (id, largest Cobb, hardware): for looking at the data by eye.

    ``source``: a folder written by :func:`generate` (its first n images); None renders n images in memory.
    """
    from spinebench.io import load_image

    tiles = []
    if source is not None:
        for rec in read_manifest(Path(source) / "manifest.csv")[:n]:
            img, _ = load_image(rec["path"])
            cap = f"{rec['image_id'].split('/')[-1]} {max(rec['cobb_pt'], rec['cobb_mt'], rec['cobb_tl']):.0f}d" + (
                " HW" if rec["implant"] else "")
            tiles.append((img, cap))
    else:
        for p, k in image_plan(n, seed):
            img, truth = render_image(seed, p, k)
            tiles.append((img, f"p{p:04d}-{k} {truth.cobb.max():.0f}d" + (" HW" if truth.implant else "")))
    return tile_sheet(path, tiles, height=height, cols=cols)


def tile_sheet(path: str | os.PathLike, tiles, height: int = 420, cols: int = 12) -> Path:
    """Write captioned grayscale tiles ``[(img [0, 1], caption), ...]`` as rows of ``cols`` at one height."""
    ims = []
    for img, cap in tiles:
        im = Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8))
        im = im.resize((max(1, round(im.width * height / im.height)), height), Image.LANCZOS)
        canvas = Image.new("L", (im.width, height + 18), 40)
        canvas.paste(im, (0, 0))
        ImageDraw.Draw(canvas).text((3, height + 3), cap, fill=230, font=ImageFont.load_default(size=12))
        ims.append(canvas)
    rows = [ims[i:i + cols] for i in range(0, len(ims), cols)]
    W = max(sum(t.width + 4 for t in r) for r in rows)
    sheet = Image.new("L", (W, len(rows) * (height + 22)), 20)
    for r, row in enumerate(rows):
        x = 0
        for t in row:
            sheet.paste(t, (x, r * (height + 22)))
            x += t.width + 4
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


# ---------------------------------------------------------------------------------------------------------------
# data source


def scale_for(max_side: int | None) -> float:
    """The film scale the default set is rendered at for a run that decodes images to ``max_side`` at most.

    Why: rendering costs per pixel (0.35 s a full-size film on one core, 0.095 s at half size), and the quick
    profile keeps 320 px of a film's 800-1200: half-size films (400-600 px tall) still cover that 1.25-1.9 times.
    Runs that keep more (the paper profile's 1024) get full-size films. Two sizes only, so the cache holds at most
    two copies of the set.
    """
    return 0.5 if max_side is not None and max_side * 1.25 <= 800 * 0.5 else 1.0


def default_dir(n: int | None = None, seed: int = DEFAULT_SEED, scale: float = 1.0) -> Path:
    from spinebench.paths import cache_dir

    n = DEFAULT_N if n is None else n
    return cache_dir("synth", f"v{GENERATOR_VERSION}-n{n}-s{seed}" + ("" if scale == 1 else f"-x{scale:g}"))


def ensure_default(n: int | None = None, seed: int = DEFAULT_SEED, workers: int | None = None,
                   scale: float = 1.0) -> Path:
    """The default set, generated into the cache the first time (a completion marker guards half-written sets), and
    again where the marker says other generator code drew it (:func:`_marker_text`)."""
    out = default_dir(n, seed, scale)
    n = DEFAULT_N if n is None else n
    marker = out / COMPLETE_MARKER
    current = marker.is_file() and marker.read_text() == _marker_text(n, seed, scale)
    if not current or not (out / "manifest.csv").exists():
        if marker.is_file():
            log.warning("the cached synthetic set in %s was drawn by other generator code; drawing it again", out)
        log.info("generating the default synthetic set (%d images, seed %d, scale %g) into %s", n, seed, scale, out)
        generate(out, n=n, seed=seed, workers=workers, scale=scale)
    return out


@register_source("synth", sized=True)
def load_synth(arg: str | None, max_side: int | None = None) -> list[dict]:
    """``synth``: the default set (generated once into the cache, at :func:`scale_for` ``max_side``);
    ``synth=DIR``: a folder from ``data synth``."""
    from spinebench.errors import SpecError

    if arg is None:
        return read_manifest(ensure_default(scale=scale_for(max_side)) / "manifest.csv")
    d = Path(arg).expanduser()
    if not (d / "manifest.csv").is_file():
        raise SpecError(f"synth={arg}: no manifest.csv there; write one with "
                        f"`python -m spinebench data synth --out {arg}`")
    return read_manifest(d / "manifest.csv")
