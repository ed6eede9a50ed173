"""Augmentations that suit radiographs, as item -> item callables (items from spinebench.data.dataset).

What is varied is what varies between real acquisitions: exposure (gamma, contrast, brightness), quantum noise,
patient positioning (small rotation, scale, shift) and left/right orientation (AP views are mirrored between
sites; a mirrored spine keeps both findings). What is never done: vertical flips or large rotations (a spine is
upright on every AP radiograph), colour changes (there is no colour), or crops that could cut hardware out.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from spinebench import LABEL_MAP


def intensity_jitter(img: torch.Tensor, rng: np.random.Generator, strength: float = 1.0) -> torch.Tensor:
    """Exposure and noise changes; keeps the [0, 1] range."""
    gamma = math.exp(rng.uniform(-0.35, 0.35) * strength)
    img = img.clamp(0, 1) ** gamma
    contrast = 1.0 + rng.uniform(-0.2, 0.2) * strength
    bright = rng.uniform(-0.08, 0.08) * strength
    img = (img - 0.5) * contrast + 0.5 + bright
    sigma = rng.uniform(0, 0.03) * strength
    if sigma > 0:
        g = torch.Generator().manual_seed(int(rng.integers(2**31)))
        img = img + sigma * torch.randn(img.shape, generator=g)
    return img.clamp(0, 1)


#: how a film is shrunk to a classifier's fixed input (:func:`resize`)
DOWNSAMPLES = ("bilinear", "max")


def check_downsample(mode: str) -> str:
    """``mode`` if it is one of :data:`DOWNSAMPLES`, else a ValueError naming the choices."""
    if mode not in DOWNSAMPLES:
        raise ValueError(f"unknown downsample {mode!r} (expected one of {', '.join(DOWNSAMPLES)})")
    return mode


def resize(img: torch.Tensor, size: tuple[int, int], downsample: str = "bilinear") -> torch.Tensor:
    """(1, H, W) -> (1, *size): antialiased bilinear (the classifiers' fixed input size, as in the paper), or with
    ``downsample="max"``, where the film shrinks on both axes, each output pixel the brightest of its cell
    (adaptive max pooling).

    Why ``max``: metal is the brightest thing on a radiograph, and the smallest implants (a stand-alone cage's
    1 mm marker pins, a single screw) are 1-3 px wide in the decoded cache. Averaged down to 128 x 56 their
    contrast falls below that of bone edges; the brightest pixel of each cell keeps them. On 120 implant films of
    another synthetic seed the films whose hardware keeps < 0.2 of contrast at 128 x 56 fell from 8 to 4 (area
    averaging at 256 x 112, 4x the pixels, also leaves 4). Measured gains in ``spinebench.engine.profiles``.
    """
    if tuple(img.shape[-2:]) == tuple(size):
        return img
    if check_downsample(downsample) == "max" and img.shape[-2] >= size[0] and img.shape[-1] >= size[1]:
        return F.adaptive_max_pool2d(img[None], tuple(size))[0]
    return F.interpolate(img[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def grid_theta(inverse: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``affine_grid``'s (..., 2, 3) matrix from an output -> input map in pixel coordinates (..., 3, 3).

    Why: ``affine_grid`` works in coordinates normalised to [-1, 1] per axis (``align_corners=False``:
    u = (n + 1) * W / 2), and a turn written there is a shear in pixels on a non-square input; a map written in
    pixels and converted here stays a turn whatever the aspect (the classifiers' and the Cobb model's augmentation).
    """
    to_n = torch.tensor([[2 / w, 0, -1], [0, 2 / h, -1], [0, 0, 1]], dtype=inverse.dtype)
    return (to_n @ inverse @ torch.linalg.inv(to_n))[..., :2, :]


def affine_inverse(angle: float, scale: float, shift: tuple[float, float], size: tuple[int, int]) -> torch.Tensor:
    """The (3, 3) output -> input pixel map of :func:`affine_theta` (float64); its inverse moves points with the
    pixels (the classifiers' landmark targets)."""
    h, w = size
    cx, cy = w / 2, h / 2
    c, s = math.cos(angle) / scale, math.sin(angle) / scale
    return torch.tensor([[c, -s, cx + shift[0] * cx - (c * cx - s * cy)],
                         [s, c, cy + shift[1] * cy - (s * cx + c * cy)], [0, 0, 1]], dtype=torch.float64)


def affine_theta(angle: float, scale: float, shift: tuple[float, float], size: tuple[int, int]) -> torch.Tensor:
    """``affine_grid``'s (2, 3) matrix for a turn by ``angle`` (radians) and a zoom by ``scale`` about the centre in
    pixel space, then a shift by ``shift`` (fractions of the half-width and half-height), on an (H, W) image.

    With the textbook matrix written in normalised coordinates instead, a "7 degree" turn tilted the horizontal
    edges (endplates) of a 192 x 80 input by 17 degrees, faking the vertebral tilt that a scoliosis call reads.
    """
    h, w = size
    return grid_theta(affine_inverse(angle, scale, shift, size), h, w).float()


def implant_mask(item: dict, size: tuple[int, int]) -> torch.Tensor:
    """(1, *size) float32: 1 inside the item's implant (``Lum``) boxes, scaled from the item's image to ``size``,
    else 0; all NaN (unknown) for a film labelled implant without an implant box (image-level labels only), so a
    loss leaves it out instead of learning "no hardware here".

    Why: the classifiers' train-time implant map (``TrainSettings.aux_implant_weight``). The implants a quick
    classifier misses are the small ones (a single screw or cage, under a tenth of the film's height), and one bit
    per film does not say where to look; the boxes the detectors train on do.
    """
    h, w = (int(v) for v in size)
    ih, iw = item["image"].shape[-2:]
    lum = item["box_labels"] == LABEL_MAP["Lum"]
    boxes = item["boxes"][lum].double() * torch.tensor([w / iw, h / ih] * 2, dtype=torch.float64)
    if not len(boxes) and float(item["labels"][0]) > 0.5:
        return torch.full((1, h, w), math.nan)
    ys = torch.arange(h, dtype=torch.float64)[:, None] + 0.5   # pixel centres
    xs = torch.arange(w, dtype=torch.float64)[None, :] + 0.5
    mask = torch.zeros(h, w, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes.tolist():
        # a box thinner than a pixel still marks the pixel it lies in
        x0, x1 = min(x0, math.floor(x0) + 0.5), max(x1, math.floor(x1) + 0.5)
        y0, y1 = min(y0, math.floor(y0) + 0.5), max(y1, math.floor(y1) + 0.5)
        mask |= (ys >= y0) & (ys <= y1) & (xs >= x0) & (xs <= x1)
    return mask.float()[None]


#: the model-input normalisations a landmark model may be built with (``input_norm``; :func:`normalize_input`)
INPUT_NORMS = ("none", "local")


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, C, H, W) separable Gaussian blur, edges replicated (a film's border is not black). A wide one (sigma of
    4 px or more) is taken on a 4x average-pooled copy and upsampled: 1.4 ms instead of 6.3 for a batch of 16 at
    192 x 96 and sigma 8 (2-core CPU); what it feeds is a slow background, which the pooling does not change."""
    h, w = x.shape[-2:]
    k = 4 if sigma >= 4 and min(h, w) >= 16 else 1
    y = F.avg_pool2d(x, k, ceil_mode=True) if k > 1 else x
    s = sigma / k
    r = max(1, int(3 * s))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (t / s) ** 2)
    g = (g / g.sum()).view(1, 1, 1, -1).repeat(x.shape[1], 1, 1, 1)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), g, groups=x.shape[1])
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), g.transpose(-1, -2), groups=x.shape[1])
    return F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False) if k > 1 else y


def equalize(x: torch.Tensor, lo: float = 0.0, hi: float = 1.0, bins: int = 1024) -> torch.Tensor:
    """(B, 1, H, W) -> each pixel's mid-rank quantile within its own image, in [0, 1] (histogram equalisation),
    from a ``bins``-bin histogram over [``lo``, ``hi``] (values outside are clamped). Equal values get equal outputs
    (a flat black border stays flat). A histogram, not a sort: a sort and two searches cost 62 ms a batch of 16 at
    192 x 96 on a 2-core CPU, a third of a training step; this costs a few."""
    b = x.shape[0]
    flat = x.reshape(b, -1)
    n = flat.shape[1]
    idx = ((flat - lo) * (bins / (hi - lo))).long().clamp_(0, bins - 1)
    counts = torch.bincount((idx + bins * torch.arange(b, device=x.device)[:, None]).flatten(),
                            minlength=b * bins).view(b, bins).to(x.dtype)
    cdf = (counts.cumsum(1) - counts / 2) / n   # mid-rank: half of a bin's own pixels count as below
    return cdf.gather(1, idx).view_as(x)


def local_contrast(x: torch.Tensor, sigma_frac: float = 1 / 12) -> torch.Tensor:
    """(B, 1, H, W) in [0, 1] -> the same shape in [0, 1]: half the film's equalised grey levels, half its equalised
    local contrast ((x - local mean) / local spread, both Gaussian-weighted over ``sigma_frac`` of the width).

    Why: what separates real radiographs from the synthetic films a CPU run trains on is mostly appearance, not
    anatomy: exposure and detector response curves, scatter and soft tissue over the spine, blur. Equalising takes
    out the response curve and exposure; the local term takes out the slow soft-tissue and scatter background and
    keeps the edges the vertebra corners sit on. Synthetic and real films come closer in look, though not in
    kind: the realism probes still tell them apart (``bench_realism.py --input-norm local`` at 192 x 96: CNN probe
    held-out AUROC 0.88 -> 0.86, histogram probe 0.98 -> 0.98).

    Measured on the quick Cobb model (``cobb_regress_resnet10t``, 60 s on ``synth`` only, three seeds each, 2-core
    CPU), scored on the 481 real AASCE films (SMAPE): plain input 31.1%, equalised only 28.6%, local term only
    27.0%, this half-and-half mix 25.1% (sigma = width / 12; width / 24: 30.0%, width / 6: 25.3%) in a prototype
    with an exact sort and blur; this implementation 27.0% (synthetic validation 22.3 -> 19.8%, test 24.7 -> 20.4%).
    Random blur of the training films instead: no gain (31.4%).
    """
    with torch.autocast(x.device.type, enabled=False):
        x = x.float()
        sigma = max(0.5, sigma_frac * x.shape[-1])
        mean = _gaussian_blur(x, sigma)
        spread = _gaussian_blur((x - mean) ** 2, sigma).clamp_min(1e-8).sqrt()
        return 0.5 * equalize(x) + 0.5 * equalize((x - mean) / (spread + 0.02), -5.0, 5.0)


def check_input_norm(mode: str) -> str:
    """``mode`` if it is one of :data:`INPUT_NORMS`, else a ValueError naming the choices."""
    if mode not in INPUT_NORMS:
        raise ValueError(f"unknown input_norm {mode!r} (expected one of {', '.join(INPUT_NORMS)})")
    return mode


def normalize_input(x: torch.Tensor, mode: str) -> torch.Tensor:
    """A landmark model's input normalisation ``mode`` (one of :data:`INPUT_NORMS`) applied to (B, 1, H, W)."""
    return local_contrast(x) if check_input_norm(mode) == "local" else x


#: length of :func:`spine_shape`: 17 vertebra centres' x, then 17 vertebra tilts
SPINE_SHAPE_LEN = 34


def spine_shape(landmarks: torch.Tensor, width: float) -> torch.Tensor:
    """The spine's shape from its 68 corners (AASCE order, input pixels): (34,) float32 = the 17 vertebra centres'
    x relative to their mean, / ``width``, then the 17 vertebra tilts (radians; the direction from the left edge's
    midpoint to the right edge's, the vectors :func:`spinebench.cobb.cobb_angles` measures). NaN where unknown.

    Why: the classifiers' auxiliary target (``TrainSettings.aux_shape_weight``). A scoliosis label is one bit per
    film; these 34 numbers say where and how much the spine bends, a denser gradient for the same images.
    """
    v = landmarks.double().view(17, 4, 2)
    cx = v[:, :, 0].mean(1)
    d = (v[:, 1] + v[:, 3] - v[:, 0] - v[:, 2]) / 2
    return torch.cat([(cx - cx.mean()) / width, torch.atan2(d[:, 1], d[:, 0])]).float()


class ClassifierTransform:
    """Resize to the model's input size; in training also flip, small affine and mild intensity jitter.

    ``shape_targets``: also return ``item["shape"]`` = :func:`spine_shape` of the landmarks moved with the pixels
    (resize, mirror, affine); ``implant_map``: also return ``item["implant_map"]`` = :func:`implant_mask` at the
    input size, moved with the pixels the same way. The random draws, and so the pixels, are the same either way.

    Why this mild: a scoliosis call reads vertebral tilt, and strong exposure changes and noise blur the few pixels
    it lives in at a classifier's input. ResNet-50 at 96 x 40, 360 steps, validation (one seed, 2-core CPU):
    rotation +-7 and full jitter gave scoliosis AUROC 0.64 (implant 0.98, val loss 0.43); +-3 and full jitter 0.72
    (0.97, 0.44); +-3 and jitter 0.3 0.82 (0.99, 0.35).
    """

    def __init__(self, size: tuple[int, int], train: bool, rot_deg: float = 3.0, intensity: float = 0.3,
                 shape_targets: bool = False, implant_map: bool = False, downsample: str = "bilinear"):
        self.size = (int(size[0]), int(size[1]))
        self.downsample = check_downsample(downsample)
        self.train = train
        self.rot_deg, self.intensity = rot_deg, intensity
        self.shape_targets, self.implant_map = shape_targets, implant_map

    def __call__(self, item: dict, rng: np.random.Generator) -> dict:
        h, w = self.size
        ih, iw = item["image"].shape[-2:]
        img = resize(item["image"], self.size, self.downsample)
        pts = item["landmarks"].double() * torch.tensor([w / iw, h / ih], dtype=torch.float64) \
            if self.shape_targets else None
        # the implant mask rides along as a second channel, so every move below is the pixels' own
        mask = implant_mask(item, self.size) if self.implant_map else None
        known = mask is not None and bool(torch.isfinite(mask).all())
        if known:
            img = torch.cat([img, mask])
        if self.train:
            if rng.random() < 0.5:
                img = img.flip(-1)
                if pts is not None:  # mirrored: left and right corners swap, so the AASCE order is kept
                    pts = torch.stack([w - pts[:, 0], pts[:, 1]], 1).view(17, 2, 2, 2).flip(2).reshape(68, 2)
            ang = math.radians(rng.uniform(-self.rot_deg, self.rot_deg))
            s = rng.uniform(0.9, 1.1)
            tx, ty = rng.uniform(-0.05, 0.05, size=2)
            inverse = affine_inverse(ang, s, (tx, ty), self.size)
            grid = F.affine_grid(grid_theta(inverse, h, w).float()[None], [1, 1, *self.size], align_corners=False)
            img = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
            if known:
                img, mask = img[:1], img[1:]
            img = intensity_jitter(img, rng, self.intensity)
            if pts is not None:
                pts = (torch.cat([pts, torch.ones_like(pts[:, :1])], 1) @ torch.linalg.inv(inverse).T)[:, :2]
        elif known:
            img, mask = img[:1], img[1:]
        item = dict(item)
        item["image"] = img.contiguous()
        if pts is not None:
            item["shape"] = spine_shape(pts, w)
        if mask is not None:
            item["implant_map"] = mask[0].contiguous()
        return item


class DetectorTransform:
    """Detectors resize inside the model (torchvision's GeneralizedRCNNTransform); here: flip, a sideways stretch
    and intensity, in training only.

    ``stretch=(lo, hi)``: each training film is widened or narrowed by a factor drawn log-uniformly from [lo, hi]
    (its height kept), its boxes and landmarks with it. Why: the detectors resize every film to the same height,
    so their box regression sees one aspect of spine and hardware per film; real radiographs are narrower crops
    whose hardware looks wider (the median `Lum` box is 0.97 as wide as tall on the 626 real hybrid films, 0.85 on
    synthetic ones). What it bought (the quick Inception-v2, 4 paired seeds; ``engine.profiles``): outlines on
    unseen synthetic films (`Lum` AP@0.5 0.58 against 0.48), hardly on real ones (0.41 against 0.39).
    """

    def __init__(self, train: bool, stretch: tuple[float, float] | None = None):
        self.train = train
        if stretch is not None and not 0 < stretch[0] <= stretch[1]:
            raise ValueError(f"stretch must be (lo, hi) with 0 < lo <= hi (got {stretch!r})")
        self.stretch = None if stretch is None else (float(stretch[0]), float(stretch[1]))

    def __call__(self, item: dict, rng: np.random.Generator) -> dict:
        if not self.train:
            return item
        item = dict(item)
        img = item["image"]
        if rng.random() < 0.5:
            w = img.shape[-1]
            img = img.flip(-1)
            b = item["boxes"].clone()
            if len(b):
                b[:, [0, 2]] = w - item["boxes"][:, [2, 0]]
            item["boxes"] = b
            lm = item["landmarks"].clone()
            lm[:, 0] = w - lm[:, 0]
            # mirrored corners: left and right swap, so the AASCE corner order is kept
            item["landmarks"] = lm.view(17, 2, 2, 2).flip(2).reshape(68, 2)
        if self.stretch is not None:
            k = math.exp(rng.uniform(math.log(self.stretch[0]), math.log(self.stretch[1])))
            h, w = img.shape[-2:]
            nw = max(1, round(w * k))
            img = F.interpolate(img[None], size=(h, nw), mode="bilinear", antialias=nw < w, align_corners=False)[0]
            k = nw / w   # what the pixels moved by, after rounding
            b = item["boxes"].clone()
            b[:, [0, 2]] *= k
            lm = item["landmarks"].clone()
            lm[:, 0] *= k
            item["boxes"], item["landmarks"] = b, lm
        item["image"] = intensity_jitter(img, rng, strength=0.7)
        return item
