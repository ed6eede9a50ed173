"""Drawing shared by the synthetic generator and the hybrid wrapper; surgical hardware is drawn ONLY here.

Why one module: an implant must look the same whether it lands on a synthetic spine (``synth``) or on a real
radiograph (``hybrid:``), or a model could learn which source an image came from instead of what it shows.

Hardware is planned from the 68 vertebra-corner landmarks the way a surgeon would place it (pedicle screws through
the pedicles of consecutive vertebrae, rods through the screw heads, cages in lumbar disc spaces, a lateral plate,
a lone screw, long fusion rods on scoliotic spines), drawn as a metal thickness map with partial volume at the rim
(supersampled), and blended into a display-domain image (bright = dense, values in [0, 1]) with the image's own
blur and noise, measured from the image itself. Ground truth comes from the drawing: one ``Lum`` box per construct,
the extent of its visible metal.

Coordinates: (x, y) pixels with the pixel-centre convention (pixel ``i`` spans ``[i - 0.5, i + 0.5)``), the same
as the landmarks; boxes are ``[x0, y0, x1, y1]`` with ``x1``/``y1`` the far pixel edges.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

#: Changing anything that alters drawn pixels bumps this (the caches of synth and hybrid key on it).
RENDER_VERSION = 2


def code_fingerprint(*modules) -> str:
    """The first 12 hex digits of the sha256 of these modules' source files: what cached pixels depend on beyond
    the version numbers.

    Why: the caches of generated films (``synth``, ``hybrid:``) were keyed on the version numbers alone, so films
    drawn by other code under the same number (a change that forgot the bump, an experiment on a checkout) were
    read back as if current: an experiment once trained on such a stale set and measured a gain it did not have
    (docs/results.md, session 31). With the sources' hash in the key a cache is redrawn whenever the drawing code
    differs. "unknown" where a source file cannot be read (a frozen install): the version numbers alone, as before.
    """
    h = hashlib.sha256()
    try:
        for m in modules:
            h.update(Path(m.__file__).read_bytes())
    except (OSError, TypeError, AttributeError):
        return "unknown"
    return h.hexdigest()[:12]


#: Typical lumbar vertebral body width (mm); turns landmark sizes into a mm scale for implant dimensions.
LUMBAR_WIDTH_MM = 45.0
#: Metal attenuation: display opacity of a thickness t is 1 - exp(-METAL_MU * t); t = 1 is a screw shaft.
METAL_MU = 2.2
HARDWARE_KINDS = ("pedicle_rod", "cage", "plate", "single_screw", "long_fusion")


# ----------------------------------------------------------------------------------------------------------------
# supersampled canvas


class Canvas:
    """A float canvas over a window of the image, drawn ``ss`` times finer and averaged back down.

    The averaging is what gives shapes partial-volume edges (a pixel half covered by metal is half as bright).
    Shapes painted later overwrite earlier ones, so nested shapes (a window in a cage, the core of a rod) are drawn
    outer first.
    """

    def __init__(self, x0: int, y0: int, width: int, height: int, ss: int = 2, mode: str = "F"):
        self.x0, self.y0, self.ss = int(x0), int(y0), int(ss)
        self.width, self.height = int(width), int(height)
        # "L" (bytes, values 0..2.55 in steps of 0.01) is 4x cheaper than "F" for whole-image anatomy layers
        self.scale = 100.0 if mode == "L" else 1.0
        self.im = Image.new(mode, (self.width * self.ss, self.height * self.ss), 0)
        self.draw = ImageDraw.Draw(self.im)

    def _fill(self, value: float):
        return int(round(value * self.scale)) if self.scale != 1.0 else float(value)

    def _pts(self, pts) -> list[tuple[float, float]]:
        p = (np.asarray(pts, dtype=np.float64).reshape(-1, 2) - (self.x0, self.y0) + 0.5) * self.ss - 0.5
        return [(float(a), float(b)) for a, b in p]

    def polygon(self, pts, value: float) -> None:
        if len(pts) >= 3:
            self.draw.polygon(self._pts(pts), fill=self._fill(value))

    def line(self, pts, width: float, value: float) -> None:
        w = max(1, int(round(width * self.ss)))
        pp = self._pts(pts)
        self.draw.line(pp, fill=self._fill(value), width=w, joint="curve")
        if w > 2:  # round caps so that thick lines do not end square
            r = w / 2.0
            for (a, b) in (pp[0], pp[-1]):
                self.draw.ellipse([a - r, b - r, a + r, b + r], fill=self._fill(value))

    def ellipse(self, center, rx: float, ry: float, angle: float, value: float, n: int = 28) -> None:
        """A rotated ellipse (angle in radians, the x semi-axis rotated from the image x axis)."""
        self.polygon(ellipse_points(center, rx, ry, angle, n), value)

    def result(self) -> np.ndarray:
        im = self.im.reduce(self.ss) if self.ss > 1 else self.im
        out = np.asarray(im, dtype=np.float32)
        return out / np.float32(self.scale) if self.scale != 1.0 else out


def ellipse_points(center, rx: float, ry: float, angle: float, n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = math.cos(angle), math.sin(angle)
    x, y = rx * np.cos(t), ry * np.sin(t)
    return np.stack([center[0] + c * x - s * y, center[1] + s * x + c * y], axis=1)


def smooth_path(points: np.ndarray, per_segment: int = 8) -> np.ndarray:
    """A Catmull-Rom curve through the points (a rod bent to pass through every screw head)."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) < 3:
        return p
    ext = np.vstack([2 * p[0] - p[1], p, 2 * p[-1] - p[-2]])
    out = []
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = ext[i - 1], ext[i], ext[i + 1], ext[i + 2]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t ** 2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t ** 3))
    out.append(p[-1:])
    return np.vstack(out)


# ----------------------------------------------------------------------------------------------------------------
# vertebra geometry from landmarks


@dataclass
class Vertebra:
    """One vertebral body in the image: centre, unit axes (u to the image right, v down the spine), size in px."""

    center: np.ndarray
    u: np.ndarray
    v: np.ndarray
    width: float
    height: float
    corners: np.ndarray  # (4, 2) TL, TR, BL, BR

    def at(self, a: float, b: float) -> np.ndarray:
        """The point ``a`` widths to the right and ``b`` heights down from the centre."""
        return self.center + a * self.width * self.u + b * self.height * self.v


def vertebrae_from_landmarks(landmarks) -> list[Vertebra]:
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 4, 2)
    out = []
    for tl, tr, bl, br in pts:
        left, right = (tl + bl) / 2, (tr + br) / 2
        top, bottom = (tl + tr) / 2, (bl + br) / 2
        u = right - left
        w = float(np.hypot(*u)) or 1.0
        u = u / w
        v = np.array([-u[1], u[0]])  # u rotated a quarter turn clockwise on screen: down the spine
        h = float(abs(np.dot(bottom - top, v))) or 1.0
        out.append(Vertebra((tl + tr + bl + br) / 4, u, v, w, h, np.array([tl, tr, bl, br])))
    return out


def extrapolate_s1(vertebrae: Sequence[Vertebra], disc_ratio: float = 0.35) -> Vertebra:
    """An S1 'vertebra' below L5 (landmarks stop at L5; S1 screws and L5-S1 cages need it)."""
    l5 = vertebrae[-1]
    h = 0.9 * l5.height
    c = l5.center + (0.5 * l5.height + disc_ratio * l5.height + 0.5 * h) * l5.v
    w = 1.05 * l5.width
    corners = np.array([c - w / 2 * l5.u - h / 2 * l5.v, c + w / 2 * l5.u - h / 2 * l5.v,
                        c - w / 2 * l5.u + h / 2 * l5.v, c + w / 2 * l5.u + h / 2 * l5.v])
    return Vertebra(c, l5.u.copy(), l5.v.copy(), w, h, corners)


#: How far down the column the next body's centre may lie, in body heights (the local median): the other AASCE
#: films step 0.41-3.96 (1.06-2.27 for 98% of steps: taller lumbar bodies, wider discs, the odd compressed level).
SEQUENCE_STEP = (0.35, 4.0)


def in_sequence(vertebrae: Sequence[Vertebra]) -> np.ndarray:
    """Per vertebra: does it lie in its place in the column, the next body's centre down the column from it by
    :data:`SEQUENCE_STEP` body heights? Out of place: a body whose step to each neighbour it has is wrong (an end
    body has one), and both bodies of a pair lying on each other.

    Why: in 20 of the 481 AASCE training films the 17th annotated body, read as L5, lies above L4 (in 18 above T1:
    C7, it seems), and in 6 more two bodies lie on each other (L5 on L4, T6 on T7, T1 on T2). Hardware planned on
    such an "L5" was drawn from the neck to the pelvis or as a speck at the neck.
    """
    n = len(vertebrae)
    if n < 2:
        return np.ones(n, bool)
    heights = np.array([vt.height for vt in vertebrae])
    step = np.array([np.dot(b.center - a.center, a.v) / np.median(heights[max(0, i - 2):i + 4])
                     for i, (a, b) in enumerate(zip(vertebrae[:-1], vertebrae[1:]))])
    good = (step > SEQUENCE_STEP[0]) & (step < SEQUENCE_STEP[1])
    in_place = np.r_[False, good] | np.r_[good, False]  # a good step from the body above or to the one below
    stacked = np.abs(step) <= SEQUENCE_STEP[0]
    return in_place & ~np.r_[stacked, False] & ~np.r_[False, stacked]


def plausible(vertebrae: Sequence[Vertebra]) -> np.ndarray:
    """Per vertebra: is its corner quad a sane body (convex, top and bottom edges alike, size like its
    neighbours) in its place in the column (:func:`in_sequence`)? Real annotations hold the odd misplaced corner
    or body; hardware is not placed on those."""
    n = len(vertebrae)
    ok = np.ones(n, bool)
    widths = np.array([vt.width for vt in vertebrae])
    heights = np.array([vt.height for vt in vertebrae])
    for i, vt in enumerate(vertebrae):
        tl, tr, bl, br = vt.corners
        ring = np.array([tl, tr, br, bl])
        edges = np.roll(ring, -1, axis=0) - ring
        cross = edges[:, 0] * np.roll(edges, -1, axis=0)[:, 1] - edges[:, 1] * np.roll(edges, -1, axis=0)[:, 0]
        top, bottom = np.hypot(*(tr - tl)), np.hypot(*(br - bl))
        near = slice(max(0, i - 2), min(n, i + 3))
        ok[i] = (np.all(cross > 0) or np.all(cross < 0)) and 0.6 < top / max(bottom, 1e-6) < 1.67 \
            and 0.6 < vt.width / np.median(widths[near]) < 1.67 and 0.5 < vt.height / np.median(heights[near]) < 2
    return ok & in_sequence(vertebrae)


def mm_scale(vertebrae: Sequence[Vertebra]) -> float:
    """Pixels per millimetre, from the lumbar body widths (L1-L5)."""
    lumbar = [vt.width for vt in vertebrae[12:17]] or [vt.width for vt in vertebrae]
    return float(np.median(lumbar)) / LUMBAR_WIDTH_MM


# ----------------------------------------------------------------------------------------------------------------
# hardware: parts, constructs, planning


@dataclass
class Part:
    """One metal primitive. ``layer`` separates shafts, heads, rods and plates so that overlaps add up."""

    shape: str  # "poly" | "line"
    pts: np.ndarray
    value: float
    layer: int
    width: float = 0.0  # line width in px


@dataclass
class Construct:
    """One piece of hardware as an annotator would box it: a screw-rod construct with its cages, a plate..."""

    kind: str
    levels: tuple[int, ...]
    parts: list[Part] = field(default_factory=list)
    box: list[float] | None = None  # set by metal_map: the extent of its visible metal, None when not visible

    def extent(self) -> tuple[float, float, float, float]:
        xs, ys = [], []
        for p in self.parts:
            r = p.width / 2
            xs += [p.pts[:, 0].min() - r, p.pts[:, 0].max() + r]
            ys += [p.pts[:, 1].min() - r, p.pts[:, 1].max() + r]
        return min(xs), min(ys), max(xs), max(ys)


LAYER_SHAFT, LAYER_HEAD, LAYER_ROD, LAYER_PLATE = 0, 1, 2, 3


def _tube(parts: list[Part], pts, diameter: float, layer: int, peak: float = 1.0) -> None:
    """A metal cylinder seen side-on: thicker path through the middle than at the rim."""
    pts = np.asarray(pts, dtype=np.float64)
    for frac, val in ((1.0, 0.62), (0.72, 0.85), (0.42, 1.0)):
        parts.append(Part("line", pts, val * peak, layer, width=max(1.0, diameter * frac)))


def _screw(parts: list[Part], head: np.ndarray, tip: np.ndarray, diameter: float, ppm: float,
           rng: np.random.Generator, tulip: bool = True, rod_dir: np.ndarray | None = None) -> None:
    """A threaded screw from its head to its tip, with a polyaxial tulip head on top."""
    axis = tip - head
    length = float(np.hypot(*axis)) or 1.0
    a = axis / length
    n = np.array([-a[1], a[0]])
    pitch = max(1.2, 2.6 * ppm * rng.uniform(0.8, 1.2))
    k = max(4, int(length / pitch * 2))
    t = np.linspace(0, 1, k + 1)
    taper = np.where(t < 0.8, 1.0, 1.0 - (t - 0.8) / 0.2 * 0.65)
    thread = np.where(np.arange(k + 1) % 2 == 0, 1.0, 0.78)
    thread[0] = 1.0
    r = diameter / 2 * taper * thread
    side1 = head + t[:, None] * axis + r[:, None] * n
    side2 = head + t[:, None] * axis - r[:, None] * n
    outline = np.vstack([side1, side2[::-1]])
    parts.append(Part("poly", outline, 0.7, LAYER_SHAFT))
    core = np.vstack([head + t[:-2, None] * axis + 0.25 * diameter * n,
                      (head + t[-2] * axis)[None],
                      (head + t[:-2, None] * axis - 0.25 * diameter * n)[::-1]])
    parts.append(Part("poly", core, 1.0, LAYER_SHAFT))
    if tulip:
        d = rod_dir if rod_dir is not None else np.array([0.0, 1.0])
        d = d / (np.hypot(*d) or 1.0)
        e = np.array([-d[1], d[0]])
        hw, hl = 5.0 * ppm, 6.0 * ppm  # a 10 x 12 mm tulip
        box = np.array([head - hw * e - hl * d, head + hw * e - hl * d, head + hw * e + hl * d,
                        head - hw * e + hl * d])
        parts.append(Part("poly", box, 0.9, LAYER_HEAD))
        inner = np.array([head - 0.55 * hw * e - hl * d, head + 0.55 * hw * e - hl * d,
                          head + 0.55 * hw * e + hl * d, head - 0.55 * hw * e + hl * d])
        parts.append(Part("poly", inner, 1.15, LAYER_HEAD))


def _pedicle_screw(parts, vt: Vertebra, side: int, ppm: float, rng, conv: float, rod_dir=None,
                   tulip: bool = True, sacral: bool = False, head_at: float | None = None) -> np.ndarray:
    """Screw through one pedicle; returns the head position (where the rod passes). ``head_at``: the head this
    many body widths out from the centre (about, sd 0.05), the tip 0-0.15 widths short of the centre line;
    None: at the body's edge, converging by ``conv`` widths."""
    edge = 0.5 if not sacral else 0.46
    lat = rng.normal(edge, 0.02) if head_at is None else rng.normal(head_at, 0.05)
    head = vt.at(side * lat, rng.normal(-0.14, 0.04))
    # S1 screws converge more but are foreshortened more
    reach = conv * (0.7 if sacral else 1.0) if head_at is None else lat - rng.uniform(0.0, 0.15)
    tip = vt.at(side * (lat - reach), rng.normal(-0.05, 0.05) + (0.1 if sacral else 0.0))
    diameter = rng.choice([5.5, 6.5, 7.5]) * ppm if vt.width / ppm > 30 else rng.choice([4.5, 5.0, 5.5]) * ppm
    _screw(parts, head, tip, float(diameter), ppm, rng, tulip=tulip, rod_dir=rod_dir)
    return head


def _disc_quad(upper: Vertebra, lower: Vertebra) -> np.ndarray:
    """The disc space between two bodies: upper's bottom corners and lower's top corners (BL, BR, TR, TL)."""
    return np.array([upper.corners[2], upper.corners[3], lower.corners[1], lower.corners[0]])


def _lerp_quad(q: np.ndarray, a0: float, a1: float, b0: float, b1: float) -> np.ndarray:
    """Sub-rectangle of a disc quad: a across (0 left, 1 right), b down (0 top, 1 bottom)."""
    def pt(a, b):
        top = q[0] + a * (q[1] - q[0])
        bot = q[3] + a * (q[2] - q[3])
        return top + b * (bot - top)
    return np.array([pt(a0, b0), pt(a1, b0), pt(a1, b1), pt(a0, b1)])


def _cage(parts, upper: Vertebra, lower: Vertebra, ppm: float, rng) -> None:
    """An interbody cage: titanium (bright, with graft windows) or PEEK (faint, with marker pins)."""
    q = _disc_quad(upper, lower)
    style = rng.choice(["titanium", "peek", "peek", "tlif"])
    if style == "tlif":  # one banana-shaped cage across the midline
        spans = [(0.2, 0.8)]
    elif rng.random() < 0.5:  # two PLIF cages
        spans = [(0.18, 0.42), (0.58, 0.82)]
    else:
        spans = [(0.15, 0.85)]
    for a0, a1 in spans:
        outer = _lerp_quad(q, a0, a1, -0.08, 1.08)
        if style == "titanium":
            parts.append(Part("poly", outer, 0.75, LAYER_PLATE))
            nwin = 2 if a1 - a0 > 0.4 else 1
            for k in range(nwin):
                w0 = a0 + (a1 - a0) * (0.12 + k * 0.88 / nwin)
                w1 = a0 + (a1 - a0) * ((k + 1) * 0.88 / nwin)
                parts.append(Part("poly", _lerp_quad(q, w0, w1, 0.22, 0.78), 0.3, LAYER_PLATE))
        else:
            parts.append(Part("poly", outer, 0.06, LAYER_PLATE))
            for a in (a0 + 0.08 * (a1 - a0), a1 - 0.08 * (a1 - a0)):
                pin = _lerp_quad(q, a, a, 0.1, 0.9)
                parts.append(Part("line", pin[[0, 3]], 1.0, LAYER_HEAD, width=max(1.0, 1.0 * ppm)))
            if style == "tlif" or rng.random() < 0.5:
                c = _lerp_quad(q, (a0 + a1) / 2, (a0 + a1) / 2, 0.5, 0.5)[0]
                parts.append(Part("poly", ellipse_points(c, 1.0 * ppm, 1.0 * ppm, 0, 12), 1.0, LAYER_HEAD))


def _rod_construct(verts: list[Vertebra], levels: list[int], ppm: float, rng, kind: str,
                   sides=(-1, 1), cage_discs=(), skip: float = 0.0, thoracic_head: float | None = None
                   ) -> Construct:
    c = Construct(kind, tuple(levels))
    conv = rng.uniform(0.34, 0.5)
    for side in sides:
        heads = []
        for i, lvl in enumerate(levels):
            vt = verts[lvl]
            if 0 < i < len(levels) - 1 and rng.random() < skip:
                continue  # long constructs skip some levels
            nxt = verts[levels[min(i + 1, len(levels) - 1)]].center - verts[levels[max(i - 1, 0)]].center
            heads.append(_pedicle_screw(c.parts, vt, side, ppm, rng, conv, rod_dir=nxt,
                                        sacral=(lvl == len(verts) - 1 and len(verts) == 18),
                                        head_at=thoracic_head if lvl < 12 else None))
        if len(heads) >= 2:
            heads = np.array(heads)
            over = rng.uniform(4, 10) * ppm
            d0 = heads[0] - heads[1]
            d1 = heads[-1] - heads[-2]
            pts = np.vstack([heads[0] + over * d0 / (np.hypot(*d0) or 1.0), heads,
                             heads[-1] + over * d1 / (np.hypot(*d1) or 1.0)])
            _tube(c.parts, smooth_path(pts), rng.choice([5.5, 6.0, 6.35]) * ppm, LAYER_ROD)
    if len(sides) == 2 and len(levels) >= 4 and rng.random() < 0.4:  # a cross-link between the rods
        mid = levels[len(levels) // 2]
        reach = thoracic_head - 0.08 if thoracic_head is not None and mid < 12 else 0.42  # from rod to rod
        _tube(c.parts, [verts[mid].at(-reach, 0.5), verts[mid].at(reach, 0.5)], 4.0 * ppm, LAYER_ROD)
    for lvl in cage_discs:
        _cage(c.parts, verts[lvl], verts[lvl + 1], ppm, rng)
    return c


def plan_hardware(landmarks, rng: np.random.Generator, kind: str | None = None, *,
                  s1: np.ndarray | None = None, allow_long: bool = True,
                  thoracic_head: float | None = None) -> list[Construct]:
    """Place hardware as a surgeon would, from 68 landmarks (T1..L5). Returns one or two constructs.

    ``kind`` forces a construct type (one of HARDWARE_KINDS); None draws one, mostly lumbar screw-rod
    constructs. ``s1`` (4 corners) is the sacrum's top vertebra when known; otherwise it is extrapolated from L5.
    ``thoracic_head``: thoracic screw heads (and so the rods) this many body widths out from the centre
    (the synthetic films' :data:`spinebench.data.synth.THORACIC_SCREW_HEAD`); None: at the body's edge.
    """
    verts = vertebrae_from_landmarks(landmarks)
    s1v = vertebrae_from_landmarks(s1)[0] if s1 is not None else extrapolate_s1(verts)
    # the annotated bodies judged among themselves (an S1 drawn from a misplaced L5 would vouch for it), then S1
    ok = np.r_[plausible(verts), False]
    verts = verts + [s1v]  # index 17 = S1
    ok[17] = plausible(verts)[17] and ok[16]  # an extrapolated S1 is only as good as L5
    for _ in range(20):  # draw again when the plan lands on a malformed vertebra
        plan = _plan(verts, np.random.default_rng(rng.integers(2 ** 63)), kind, allow_long, thoracic_head)
        if all(ok[lv] for con in plan for lv in range(min(con.levels), max(con.levels) + 1)):
            return plan
    return []


def _plan(verts: list[Vertebra], rng: np.random.Generator, kind: str | None, allow_long: bool,
          thoracic_head: float | None = None) -> list[Construct]:
    ppm = mm_scale(verts[:17])
    if kind is None:
        kinds = ["pedicle_rod", "cage", "plate", "single_screw"] + (["long_fusion"] if allow_long else [])
        probs = np.array([0.62, 0.1, 0.1, 0.1] + ([0.08] if allow_long else []))
        kind = str(rng.choice(kinds, p=probs / probs.sum()))
    if kind not in HARDWARE_KINDS:
        raise ValueError(f"unknown hardware kind {kind!r}; one of {HARDWARE_KINDS}")
    out: list[Construct] = []
    if kind == "pedicle_rod":
        # fusion levels: L4-L5 and L5-S1 most often; sometimes a thoracolumbar fracture fixation
        if rng.random() < 0.12:
            top = int(rng.integers(9, 12))  # T10..T12
            levels = [top, top + 1, top + 3, top + 4] if rng.random() < 0.6 else list(range(top, top + 4))
            cages = []
        else:
            nseg = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15]))
            low = int(rng.choice([16, 17], p=[0.55, 0.45]))  # lowest instrumented: L5 or S1
            low = max(low, 12 + nseg)
            levels = list(range(low - nseg, low + 1))
            cages = [lv for lv in levels[:-1] if lv >= 12 and rng.random() < 0.45]
        sides = (-1, 1) if rng.random() < 0.93 else (int(rng.choice([-1, 1])),)
        out.append(_rod_construct(verts, levels, ppm, rng, "pedicle_rod", sides=sides, cage_discs=cages,
                                  thoracic_head=thoracic_head))
    elif kind == "long_fusion":
        top = int(rng.integers(1, 5))  # T2..T5
        low = int(rng.integers(11, 16))  # T12..L4
        out.append(_rod_construct(verts, list(range(top, low + 1)), ppm, rng, "long_fusion", skip=0.25,
                                  thoracic_head=thoracic_head))
    elif kind == "cage":
        lvl = int(rng.choice([13, 14, 15, 16], p=[0.1, 0.25, 0.4, 0.25]))
        c = Construct("cage", (lvl, lvl + 1))
        _cage(c.parts, verts[lvl], verts[lvl + 1], ppm, rng)
        out.append(c)
    elif kind == "plate":
        lvl = int(rng.choice([12, 13, 14, 15], p=[0.2, 0.3, 0.35, 0.15]))
        up, lo = verts[lvl], verts[lvl + 1]
        c = Construct("plate", (lvl, lvl + 1))
        side = int(rng.choice([-1, 1]))
        # a lateral plate on one side of two bodies, two transverse screws in each body
        a0 = side * 0.5
        plate = np.array([up.at(a0 - side * 0.02, -0.3), up.at(a0 + side * 0.1, -0.3),
                          lo.at(a0 + side * 0.1, 0.3), lo.at(a0 - side * 0.02, 0.3)])
        c.parts.append(Part("poly", plate, 0.55, LAYER_PLATE))
        for vt in (up, lo):
            for b in (-0.22, 0.22):
                _screw(c.parts, vt.at(a0 + side * 0.05, b), vt.at(-side * 0.3, b * 0.8), 5.5 * ppm, ppm, rng,
                       tulip=False)
        if rng.random() < 0.6:
            _cage(c.parts, up, lo, ppm, rng)
        out.append(c)
    elif kind == "single_screw":
        lvl = int(rng.integers(12, 18))
        c = Construct("single_screw", (lvl,))
        side = int(rng.choice([-1, 1]))
        _pedicle_screw(c.parts, verts[lvl], side, ppm, rng, rng.uniform(0.34, 0.5), tulip=rng.random() < 0.6,
                       sacral=lvl == 17)
        out.append(c)
    return out


# ----------------------------------------------------------------------------------------------------------------
# hardware: drawing and blending


def metal_map(shape: tuple[int, int], constructs: Sequence[Construct], ss: int = 4
              ) -> tuple[np.ndarray, list[list[float]]]:
    """Metal thickness (H, W) float32 and one box per visible construct (the extent of its visible metal).

    Constructs entirely outside the image yield no box (their ``box`` stays None). Each is drawn supersampled in
    its own window.
    """
    H, W = shape
    thick = np.zeros((H, W), np.float32)
    boxes: list[list[float]] = []
    for con in constructs:
        x0, y0, x1, y1 = con.extent()
        wx0, wy0 = max(0, int(math.floor(x0)) - 2), max(0, int(math.floor(y0)) - 2)
        wx1, wy1 = min(W, int(math.ceil(x1)) + 3), min(H, int(math.ceil(y1)) + 3)
        if wx1 - wx0 < 2 or wy1 - wy0 < 2:
            continue
        s = ss
        while s > 1 and (wx1 - wx0) * (wy1 - wy0) * s * s > 6e6:
            s -= 1
        layers = {}
        for p in con.parts:
            cv = layers.get(p.layer)
            if cv is None:
                cv = layers[p.layer] = Canvas(wx0, wy0, wx1 - wx0, wy1 - wy0, s)
            if p.shape == "poly":
                cv.polygon(p.pts, p.value)
            else:
                cv.line(p.pts, p.width, p.value)
        t = sum(cv.result() for cv in layers.values())
        ys, xs = np.nonzero(t > 0.02)
        if len(xs) == 0:
            continue
        thick[wy0:wy1, wx0:wx1] += t
        con.box = [float(wx0 + xs.min()), float(wy0 + ys.min()), float(wx0 + xs.max() + 1),
                   float(wy0 + ys.max() + 1)]
        boxes.append(con.box)
    return thick, boxes


@lru_cache(maxsize=1)
def _rho_table() -> tuple[np.ndarray, np.ndarray]:
    """Lag-1 autocorrelation of high-passed noise as a function of the blur applied to white noise."""
    rng = np.random.default_rng(12345)
    white = rng.standard_normal((256, 256)).astype(np.float32)
    sigmas = np.linspace(0.0, 4.0, 41)
    rhos = []
    for s in sigmas:
        n = ndi.gaussian_filter(white, s) if s > 0 else white
        r = _highpass(n)
        rhos.append(_lag1(r))
    return sigmas, np.maximum.accumulate(np.array(rhos))


def _highpass(img: np.ndarray) -> np.ndarray:
    return img - ndi.gaussian_filter(img, 3.0)


def _lag1(r: np.ndarray, mask: np.ndarray | None = None) -> float:
    a, b = r[:, :-1], r[:, 1:]
    if mask is not None:
        m = mask[:, :-1] & mask[:, 1:]
        a, b = a[m], b[m]
    denom = float(np.sqrt((a * a).mean() * (b * b).mean())) or 1.0
    return float((a * b).mean() / denom)


def estimate_noise_blur(img: np.ndarray) -> tuple[float, float]:
    """(noise std of the high-passed image, blur sigma in px) measured on the image itself.

    The blur comes from how correlated neighbouring noise pixels are (detector blur spreads the noise as it spreads
    edges); both are measured on the flattest pixels so that anatomy edges do not count as noise.
    """
    img = np.asarray(img, dtype=np.float32)
    r = _highpass(img)
    grad = ndi.gaussian_gradient_magnitude(ndi.gaussian_filter(img, 2.0), 1.0)
    valid = (img > 0.03) & (img < 0.97)
    if valid.sum() < 1000:
        valid = np.ones_like(img, bool)
    flat = valid & (grad <= np.quantile(grad[valid], 0.4))
    res = r[flat]
    noise = float(1.4826 * np.median(np.abs(res - np.median(res))))
    sig, rho = _rho_table()
    blur = float(np.interp(_lag1(r, flat), rho, sig))
    return max(noise, 1e-4), blur


def matched_noise(shape: tuple[int, int], noise: float, blur: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with the measured high-pass std and correlation, to put back where metal hides the image's own."""
    white = rng.standard_normal(shape).astype(np.float32)
    n = ndi.gaussian_filter(white, blur) if blur > 0.05 else white
    hp = _highpass(n)
    sd = float(hp.std()) or 1.0
    return n * (noise / sd)


def blend_metal(img: np.ndarray, thick: np.ndarray, rng: np.random.Generator, *, blur: float, noise: float,
                brightness: float = 0.97, halo: float = 0.0, halo_radius: float = 6.0) -> np.ndarray:
    """Composite metal into a display-domain image: bright, blurred like the image, its noise kept.

    ``halo`` darkens a rim around the metal, as the edge enhancement of processed radiographs does; use it on
    images that were already processed (real ones), not before a generator applies its own processing.
    """
    out = np.array(img, dtype=np.float32, copy=True)
    ys, xs = np.nonzero(thick > 0)
    if len(xs) == 0:
        return out
    pad = int(3 * max(blur, halo_radius if halo > 0 else 0) + 4)
    y0, y1 = max(0, ys.min() - pad), min(img.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(img.shape[1], xs.max() + pad + 1)
    t = thick[y0:y1, x0:x1]
    if blur > 0.05:
        t = ndi.gaussian_filter(t, blur)
    a = 1.0 - np.exp(-METAL_MU * t)
    win = out[y0:y1, x0:x1]
    win = win * (1 - a) + brightness * a + matched_noise(a.shape, noise, blur, rng) * a
    if halo > 0:
        rim = np.clip(ndi.gaussian_filter(a, halo_radius) - a, 0, None)
        win = win - halo * rim
    out[y0:y1, x0:x1] = np.clip(win, 0, 1)
    return out


def add_hardware(img: np.ndarray, landmarks, rng: np.random.Generator, *, kind: str | None = None,
                 s1: np.ndarray | None = None, allow_long: bool = True, halo: float = 0.0,
                 noise_blur: tuple[float, float] | None = None, thoracic_head: float | None = None
                 ) -> tuple[np.ndarray, list[list[float]], list[Construct]]:
    """Plan, draw and blend hardware into ``img`` (float [0, 1], bright = dense).

    Returns the new image, one ``[x0, y0, x1, y1]`` box per construct, and the constructs drawn (none when the
    landmarks offer no sane place for hardware). The image's noise and blur are measured around the lumbar spine
    unless ``noise_blur`` gives them.
    """
    constructs = plan_hardware(landmarks, rng, kind, s1=s1, allow_long=allow_long, thoracic_head=thoracic_head)
    thick, boxes = metal_map(img.shape, constructs)
    if noise_blur is None:
        pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
        x0, y0 = np.floor(pts.min(axis=0)).astype(int)
        x1, y1 = np.ceil(pts.max(axis=0)).astype(int)
        crop = img[max(0, y0):max(y0 + 2, y1), max(0, x0):max(x0 + 2, x1)]
        noise_blur = estimate_noise_blur(crop if crop.size > 4000 else img)
    noise, blur = noise_blur
    ppm = mm_scale(vertebrae_from_landmarks(landmarks))
    out = blend_metal(img, thick, rng, blur=blur, noise=noise, brightness=float(rng.uniform(0.93, 1.0)),
                      halo=halo, halo_radius=max(2.0, 3.0 * ppm))
    return out, boxes, [c for c in constructs if c.box is not None]
