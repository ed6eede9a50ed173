"""Vertebra-focused landmark detection for Cobb angles: 17 vertebra centres, then each one's 4 corners.

The approach of Yi et al., "Vertebra-Focused Landmark Detection for Scoliosis Assessment" (ISBI 2020; about
10.8% SMAPE on the AASCE 2019 test set, against 21.7% for the challenge winner), here with a grey-level timm
backbone:

* a ResNet backbone and a U-Net style decoder give features at stride 4;
* a one-channel heatmap marks every vertebra centre (CenterNet focal loss), a 2-channel map the sub-cell offset of
  the centre, an 8-channel map the vectors from the centre to its 4 corners;
* decoding keeps the 17 strongest heatmap peaks, orders them top to bottom (T1..L5) and adds the corner vectors.

Why this design rather than 68 separate point heatmaps or a direct regression of 136 numbers: vertebrae look
alike, so "which of 17 is this" is hard for a per-landmark heatmap but free once centres are ordered by height;
and a corner is found relative to its own vertebra, so the tilt that the Cobb angle measures comes from local
evidence. The output is one tensor (B, 11, H/4, W/4): channel 0 heatmap logits, 1-2 centre offset (x, y), 3-10
corner vectors (x, y) for top-left, top-right, bottom-left, bottom-right, in output cells.

Inputs follow the spinebench pixel contract, (B, 1, H, W) in [0, 1]; the default input is 1024 x 512 (H x W),
the size of Yi et al.: a radiograph is resized to it without keeping the aspect, and predictions are mapped back
with separate x and y scales, so the angles are measured in the original geometry.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from spinebench.cobb import N_LANDMARKS, N_VERTEBRAE
from spinebench.data.transforms import check_input_norm
from spinebench.models.pretrained import create_timm_model
from spinebench.models.registry import register_model

STRIDE = 4
OUT_CHANNELS = 11  # heatmap 1 + centre offset 2 + corner vectors 8
_HM_PRIOR = 0.1    # initial heatmap probability (CenterNet's bias -2.19): the focal loss starts stable


class _ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class LandmarkModel(nn.Module):
    """What every ``cobb`` model is to :mod:`spinebench.tasks.cobb`, :mod:`spinebench.measure` and the demo, which
    call only these: ``forward`` -> raw output; :meth:`decode` -> landmarks; :meth:`landmark_loss`; :meth:`fit_prior`
    once before training. One task then serves a heatmap network and a regression alike."""

    #: whether the task measures with many looks at a film (``spinebench.tasks.cobb.LOOKS``: zoomed, shifted,
    #: mirrored, their angles averaged) or with the film alone: many where it was measured to pay (the corner
    #: regression); a heatmap network at 1024 x 512 would cost a CPU seconds a film for a gain not measured on it
    many_looks: bool = False

    def decode(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network output -> ((B, 68, 2) landmarks in input pixels, (B, 17) vertebra scores)."""
        raise NotImplementedError

    def landmark_loss(self, out: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The training loss of ``out`` against (B, 68, 2) landmarks in input pixels, and its parts."""
        raise NotImplementedError

    def fit_prior(self, landmarks: torch.Tensor) -> None:
        """A start taken from the (N, 68, 2) training landmarks in input pixels; none by default."""

    def set_input_norm(self, mode: str) -> None:
        """Keep ``mode``, the normalisation (``spinebench.data.transforms.normalize_input``) the cobb task's inputs
        get before this model: applied once per film by the task's data path (``tasks.cobb.stack_inputs``, its
        ``transform``), as timm's data config says a model's mean and std, so training, ``predict``, ``measure``
        and the demo feed it alike, and the weights record keeps it (``model_kwargs``). A constructor argument;
        an unknown name fails when the model is built."""
        self.input_norm = check_input_norm(mode)

    @torch.inference_mode()
    def predict_landmarks(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 68, 2) landmarks in input pixels of ``x`` (eval mode, no gradients)."""
        return self.decode(self(x))[0]


class VertebraLandmarkNet(LandmarkModel):
    """Centre heatmap + centre offset + corner vectors at stride 4 (see the module docstring)."""

    def __init__(self, backbone: str = "resnet34", pretrained: str = "none", decoder_channels=(256, 128, 64),
                 head_channels: int = 64, model_name: str = "cobb_vertebra_resnet34", input_norm: str = "none"):
        super().__init__()
        self.set_input_norm(input_norm)
        self.backbone, self.pretrained_loaded = create_timm_model(
            backbone, model_name, pretrained, features_only=True, in_chans=1, out_indices=(1, 2, 3, 4))
        c2, c3, c4, c5 = self.backbone.feature_info.channels()
        d4, d3, d2 = decoder_channels
        self.top = _ConvBNReLU(c5, d4, 1)
        self.up4 = _ConvBNReLU(d4 + c4, d4)
        self.up3 = _ConvBNReLU(d4 + c3, d3)
        self.up2 = _ConvBNReLU(d3 + c2, d2)
        self.heads = nn.ModuleList([self._head(d2, head_channels, n) for n in (1, 2, 8)])
        nn.init.constant_(self.heads[0][-1].bias, math.log(_HM_PRIOR / (1 - _HM_PRIOR)))

    @staticmethod
    def _head(cin: int, mid: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, mid, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the pixel contract is [0, 1]; centre it like an ImageNet-normalised grey image
        x = (x - 0.5) / 0.25
        f2, f3, f4, f5 = self.backbone(x)
        y = self.top(f5)
        for skip, block in ((f4, self.up4), (f3, self.up3), (f2, self.up2)):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        return torch.cat([h(y) for h in self.heads], dim=1)

    def decode(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return decode_landmarks(out)

    def landmark_loss(self, out: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, dict]:
        return landmark_loss(out, encode_targets(landmarks, tuple(out.shape[-2:])))


# ------------------------------------------------------------------------------------------- targets
def canonical_landmarks(landmarks: torch.Tensor) -> torch.Tensor:
    """Put each vertebra's corners in TL, TR, BL, BR order and the vertebrae top to bottom.

    A handful of AASCE label files swap corners or list a vertebra out of order; the network must not learn those
    slips (as in Yi et al.'s ``rearrange_pts``): left = the two smaller x, top = the smaller y of each side.
    Works on (..., 68, 2).
    """
    shape = landmarks.shape
    pts = landmarks.reshape(-1, N_VERTEBRAE, 4, 2)
    ox = pts[..., 0].argsort(dim=-1)
    pts = torch.gather(pts, 2, ox[..., None].expand_as(pts))
    left, right = pts[:, :, :2], pts[:, :, 2:]
    left = torch.gather(left, 2, left[..., 1].argsort(-1)[..., None].expand_as(left))
    right = torch.gather(right, 2, right[..., 1].argsort(-1)[..., None].expand_as(right))
    pts = torch.stack([left[:, :, 0], right[:, :, 0], left[:, :, 1], right[:, :, 1]], dim=2)
    order = pts[..., 1].mean(-1).argsort(dim=-1)
    pts = torch.gather(pts, 1, order[..., None, None].expand_as(pts))
    return pts.reshape(shape)


def _gaussian_radius(h: torch.Tensor, w: torch.Tensor, min_overlap: float = 0.7) -> torch.Tensor:
    """CenterNet's heatmap radius for a box of h x w cells (its three quadratic cases, as published)."""
    m = min_overlap
    b1, c1 = h + w, w * h * (1 - m) / (1 + m)
    r1 = (b1 + torch.sqrt((b1 ** 2 - 4 * c1).clamp_min(0))) / 2
    b2, c2 = 2 * (h + w), (1 - m) * w * h
    r2 = (b2 + torch.sqrt((b2 ** 2 - 16 * c2).clamp_min(0))) / 2
    a3, b3, c3 = 4 * m, -2 * m * (h + w), (m - 1) * w * h
    r3 = (b3 + torch.sqrt((b3 ** 2 - 4 * a3 * c3).clamp_min(0))) / 2
    return torch.minimum(torch.minimum(r1, r2), r3).floor().clamp_min(0)


def encode_targets(landmarks: torch.Tensor, out_hw: tuple[int, int], stride: int = STRIDE) -> dict:
    """Training targets from (B, 68, 2) landmarks in input pixels.

    Returns ``hm`` (B, 1, h, w) Gaussians peaking at exactly 1 in each centre's cell, ``ind`` (B, 17) flat cell
    index, ``reg`` (B, 17, 2) sub-cell offset, ``wh`` (B, 17, 8) corner minus centre (cells), ``mask`` (B, 17):
    1 where the centre lies inside the output (augmentation can push a vertebra out of the image).
    """
    h, w = out_hw
    pts = canonical_landmarks(landmarks.float()).reshape(-1, N_VERTEBRAE, 4, 2) / stride
    b = pts.shape[0]
    ctr = pts.mean(2)                                          # (B, 17, 2) continuous, in cells
    cell = ctr.floor()
    mask = ((cell[..., 0] >= 0) & (cell[..., 0] < w) & (cell[..., 1] >= 0) & (cell[..., 1] < h)).float()
    cell_c = torch.stack([cell[..., 0].clamp(0, w - 1), cell[..., 1].clamp(0, h - 1)], -1)
    ind = (cell_c[..., 1] * w + cell_c[..., 0]).long()
    bh = ((pts[:, :, 2] - pts[:, :, 0]).norm(dim=-1) + (pts[:, :, 3] - pts[:, :, 1]).norm(dim=-1)) / 2
    bw = ((pts[:, :, 1] - pts[:, :, 0]).norm(dim=-1) + (pts[:, :, 3] - pts[:, :, 2]).norm(dim=-1)) / 2
    sigma = (2 * _gaussian_radius(bh.ceil(), bw.ceil()) + 1) / 6
    ys = torch.arange(h, device=pts.device, dtype=pts.dtype)
    xs = torch.arange(w, device=pts.device, dtype=pts.dtype)
    # separable Gaussians: (B, 17, h, 1) * (B, 17, 1, w), max over vertebrae
    gy = torch.exp(-((ys[None, None] - cell[..., 1:2]) ** 2) / (2 * sigma[..., None] ** 2))
    gx = torch.exp(-((xs[None, None] - cell[..., 0:1]) ** 2) / (2 * sigma[..., None] ** 2))
    g = gy[..., :, None] * gx[..., None, :] * mask[..., None, None]
    hm = g.amax(dim=1, keepdim=True)
    return {"hm": hm, "ind": ind, "reg": ctr - cell, "wh": (pts - ctr[:, :, None]).reshape(b, N_VERTEBRAE, 8),
            "mask": mask}


def _gather(maps: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """maps (B, C, h, w), ind (B, K) flat cell indices -> (B, K, C)."""
    b, c = maps.shape[:2]
    flat = maps.reshape(b, c, -1)
    return torch.gather(flat, 2, ind[:, None, :].expand(b, c, ind.shape[1])).transpose(1, 2)


def focal_loss(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), normalised by the number of centres."""
    logits = logits.float()
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = gt.eq(1).float()
    pos_loss = F.logsigmoid(logits) * (1 - p) ** 2 * pos
    neg_loss = F.logsigmoid(-logits) * p ** 2 * (1 - gt) ** 4 * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp_min(1)


def landmark_loss(out: torch.Tensor, targets: dict) -> tuple[torch.Tensor, dict]:
    """Heatmap focal loss + L1 on centre offsets + L1 on corner vectors (weights 1, 1, 1 as Yi et al.)."""
    out = out.float()
    hm = focal_loss(out[:, :1], targets["hm"])
    mask = targets["mask"][..., None]
    n = mask.sum().clamp_min(1)
    reg = (F.l1_loss(_gather(out[:, 1:3], targets["ind"]), targets["reg"], reduction="none") * mask).sum() / (2 * n)
    wh = (F.l1_loss(_gather(out[:, 3:11], targets["ind"]), targets["wh"], reduction="none") * mask).sum() / (8 * n)
    return hm + reg + wh, {"hm": float(hm.detach()), "reg": float(reg.detach()), "wh": float(wh.detach())}


def decode_landmarks(out: torch.Tensor, stride: int = STRIDE, k: int = N_VERTEBRAE,
                     nms_kernel: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 11, h, w) network output -> ((B, 68, 2) landmarks in input pixels, (B, 17) centre scores).

    The 17 strongest local maxima of the heatmap are the vertebrae, ordered top to bottom: exactly T1..L5, as
    every AASCE radiograph shows them all.
    """
    out = out.float()
    b, _, h, w = out.shape
    heat = torch.sigmoid(out[:, :1])
    peak = F.max_pool2d(heat, nms_kernel, stride=1, padding=nms_kernel // 2)
    heat = (heat * (peak == heat)).reshape(b, -1)
    scores, ind = heat.topk(k, dim=1)
    reg = _gather(out[:, 1:3], ind)
    wh = _gather(out[:, 3:11], ind).reshape(b, k, 4, 2)
    ctr = torch.stack([(ind % w).float(), torch.div(ind, w, rounding_mode="floor").float()], -1) + reg
    order = ctr[..., 1].argsort(dim=1)
    ctr = torch.gather(ctr, 1, order[..., None].expand_as(ctr))
    wh = torch.gather(wh, 1, order[..., None, None].expand_as(wh))
    scores = torch.gather(scores, 1, order)
    pts = (ctr[:, :, None] + wh) * stride
    return pts.reshape(b, k * 4, 2), scores


def _build(backbone: str, name: str, pretrained: str, input_size=(1024, 512), **kwargs) -> VertebraLandmarkNet:
    """``input_size`` (H, W), both multiples of 32, may be changed (smaller for tests, larger for accuracy)."""
    h, w = (int(v) for v in input_size)
    if h % 32 or w % 32:
        raise ValueError(f"input_size must be multiples of 32 (the backbone's stride), got {input_size}")
    model = VertebraLandmarkNet(backbone=backbone, pretrained=pretrained, model_name=name, **kwargs)
    model.default_cfg = {"name": name, "task": "cobb", "input_size": (h, w), "paper_name": "Vertebra-focused "
                         "landmark detection (Yi et al. 2020)", "stride": STRIDE, "num_landmarks": N_LANDMARKS,
                         "backbone": backbone, "output": "heatmap 1 + centre offset 2 + corner vectors 8",
                         "input_norm": model.input_norm}
    return model


@register_model(task="cobb", paper_name="Vertebra-focused landmark detection (Yi et al. 2020)",
                input_size=(1024, 512), weights="timm:resnet34",
                card="""17 vertebra centres (heatmap) plus corner vectors -> 68 corner landmarks (T1-L5) -> the three
                AASCE Cobb angles via spinebench.cobb. ResNet-34 backbone (1 input channel) with a U-Net decoder at
                stride 4; input 1024 x 512 (H x W), aspect not kept, landmarks mapped back per axis. Not in the
                paper spinebench starts from (it has no Cobb angle): added to measure the curve it only
                detects.""")
def cobb_vertebra_resnet34(pretrained: str = "none", **kwargs) -> nn.Module:
    """Yi et al.'s vertebra-focused landmark network on a grey-level ResNet-34."""
    return _build("resnet34", "cobb_vertebra_resnet34", pretrained, **kwargs)
