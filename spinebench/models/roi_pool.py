"""RoIAlign as a matrix product on the CPU: torchvision's numbers, without its single-threaded CPU backward.

Why: in a quick detector training step on a 2-core CPU, torchvision's CPU ``roi_align`` backward took 15% of an
Inception-v2 step and 13% of an Inception-ResNet-v2 one (``torch.profiler``, fp32, 2026-12-06): a scalar loop
over RoIs x channels x bins x samples. But RoIAlign is bilinear interpolation at fixed points, the same for every
channel: for one image it is a matrix ``W`` (RoIs x bins, feature pixels) times the feature map (pixels,
channels), and its backward ``W.T @ grad``, both multithreaded matrix products. On the quick profile's small
feature maps (stride 8 of a 192 x 96 input: 24 x 12 pixels) ``W`` is tiny; where it would be large (the paper
profile's 1024 px films, a GPU) torchvision's kernel is used as before.

:func:`roi_align_matmul` follows torchvision's CPU kernel (``roi_align_kernel.cpp``) point for point: the bin and
sampling-point placement, the ``aligned`` half-pixel offset, the minimum 1-pixel RoI when not aligned, the
clamping at the borders and the zero weight for points beyond them; ``tests/test_roi_pool.py`` checks it against
``torchvision.ops.roi_align``, forward and backward.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _setup_scales  # private, but torchvision is pinned (requirements.txt)

#: above this many entries of one image's interpolation matrix, torchvision's kernel is used instead (64 MB fp32)
MAX_MATRIX_ENTRIES = 16_000_000


def _axis_points(start: Tensor, length: Tensor, bins: int, grid: int) -> Tensor:
    """(K, bins * grid) sampling coordinates along one axis, torchvision's placement."""
    b = torch.arange(bins, dtype=start.dtype, device=start.device)
    g = torch.arange(grid, dtype=start.dtype, device=start.device)
    size = (length / bins)[:, None, None]
    return (start[:, None, None] + b[None, :, None] * size + (g[None, None, :] + 0.5) * size / grid).reshape(
        len(start), bins * grid)


def _corners(p: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per coordinate: (low index, high index, low weight, high weight, valid) as torchvision's bilinear rule."""
    valid = (p >= -1.0) & (p <= n)
    p = p.clamp(min=0)
    low = p.floor().long()
    at_end = low >= n - 1
    low = torch.where(at_end, torch.full_like(low, n - 1), low)
    high = torch.where(at_end, low, low + 1)
    p = torch.where(at_end, low.to(p.dtype), p)
    frac = p - low.to(p.dtype)
    return low, high, 1 - frac, frac, valid


def interpolation_matrix(rois: Tensor, height: int, width: int, output_size: tuple[int, int],
                         spatial_scale: float, sampling_ratio: int, aligned: bool = False) -> Tensor:
    """(K * ph * pw, height * width) RoIAlign weights for ``rois`` (K, 4) x1, y1, x2, y2 on one feature map."""
    ph, pw = output_size
    k = len(rois)
    dtype = rois.dtype if rois.dtype.is_floating_point else torch.float32
    r = rois.to(dtype) * spatial_scale - (0.5 if aligned else 0.0)
    rw, rh = r[:, 2] - r[:, 0], r[:, 3] - r[:, 1]
    if not aligned:
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    g = int(sampling_ratio)
    ys, xs = _axis_points(r[:, 1], rh, ph, g), _axis_points(r[:, 0], rw, pw, g)   # (K, ph*g), (K, pw*g)
    y0, y1, wy0, wy1, vy = _corners(ys, height)
    x0, x1, wx0, wx1, vx = _corners(xs, width)
    # (K, ph, g, pw, g) sample grid; each sample spreads onto its 4 neighbours
    def grid(t: Tensor, axis: str) -> Tensor:
        return t.view(k, ph, g, 1, 1) if axis == "y" else t.view(k, 1, 1, pw, g)
    valid = (grid(vy, "y") & grid(vx, "x")).to(dtype) / (g * g)
    rows = torch.arange(k * ph * pw, device=rois.device).view(k, ph, 1, pw, 1).expand(k, ph, g, pw, g)
    mat = torch.zeros(k * ph * pw, height * width, dtype=dtype, device=rois.device)
    for yi, wy in ((y0, wy0), (y1, wy1)):
        for xi, wx in ((x0, wx0), (x1, wx1)):
            cols = (grid(yi, "y") * width + grid(xi, "x")).expand(k, ph, g, pw, g)
            w = (grid(wy, "y") * grid(wx, "x") * valid).expand(k, ph, g, pw, g)
            mat.index_put_((rows.reshape(-1), cols.reshape(-1)), w.reshape(-1), accumulate=True)
    return mat


def roi_align_matmul(features: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
                     sampling_ratio: int, aligned: bool = False) -> Tensor:
    """``torchvision.ops.roi_align(features, rois, ...)`` for ``rois`` (K, 5) [image index, x1, y1, x2, y2] and
    ``sampling_ratio`` > 0, as one interpolation matrix product per image (gradients flow to ``features``)."""
    if sampling_ratio <= 0:
        raise ValueError("roi_align_matmul needs a fixed sampling_ratio > 0 (torchvision's adaptive grid is not built)")
    n, c, h, w = features.shape
    ph, pw = output_size
    out = features.new_zeros((len(rois), c, ph, pw))
    idx = rois[:, 0].long()
    dtype = torch.float64 if features.dtype == torch.float64 else torch.float32
    for i in range(n):
        sel = torch.nonzero(idx == i).flatten()
        if len(sel) == 0:
            continue
        mat = interpolation_matrix(rois[sel, 1:].detach().to(dtype), h, w, (ph, pw), spatial_scale, sampling_ratio,
                                   aligned)
        with torch.autocast(features.device.type, enabled=False):  # fp32 at least, as torchvision's autocast rule
            pooled = mat @ features[i].to(dtype).reshape(c, h * w).t()                # (K_i * ph * pw, C)
        out = out.index_copy(0, sel, pooled.to(out.dtype).view(len(sel), ph, pw, c).permute(0, 3, 1, 2))
    return out


def _use_matmul(features: Tensor, n_rois: int, output_size, sampling_ratio: int) -> bool:
    """On the CPU, with a fixed sampling grid, and while the matrix stays small (else torchvision's kernel)."""
    return (features.device.type == "cpu" and sampling_ratio > 0
            and n_rois * output_size[0] * output_size[1] * features.shape[-2] * features.shape[-1]
            <= MAX_MATRIX_ENTRIES)


class MatmulMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's :class:`~torchvision.ops.MultiScaleRoIAlign` (same levels, scales and numbers) pooling each
    level with :func:`roi_align_matmul` on the CPU where the matrix is small, torchvision's kernel elsewhere.

    The state dict and the result are the parent's; only the CPU arithmetic differs (see the module docstring).
    """

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        feats = [x[k] for k in self.featmap_names]
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(feats, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)], 0)
        levels = self.map_levels(boxes) if len(feats) > 1 else torch.zeros(len(rois), dtype=torch.int64,
                                                                            device=rois.device)
        result = feats[0].new_zeros((len(rois), feats[0].shape[1], *self.output_size))
        for level, (feat, scale) in enumerate(zip(feats, self.scales)):
            sel = torch.nonzero(levels == level).flatten()
            if len(sel) == 0:
                continue
            pool = roi_align_matmul if _use_matmul(feat, len(sel), self.output_size, self.sampling_ratio) else roi_align
            pooled = pool(feat, rois[sel], output_size=self.output_size, spatial_scale=scale,
                          sampling_ratio=self.sampling_ratio)
            result = result.index_copy(0, sel, pooled.to(result.dtype))
        return result
