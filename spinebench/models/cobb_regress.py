"""Direct regression of the 68 vertebra corners: the Cobb-angle model that learns within a CPU's minute.

The approach of Wu et al., "Automatic landmark estimation for adolescent idiopathic scoliosis assessment using
BoostNet" (MICCAI 2017), whose data became the AASCE 2019 challenge: a CNN regresses all 136 corner coordinates at
once. Less accurate than the vertebra-focused heatmaps of :mod:`spinebench.models.cobb_net` given enough training,
but it needs far fewer steps: on two CPU cores the heatmap network, in any budget a ten-minute run has, predicted
straight spines (validation SMAPE 53-58%, worse than a constant), while this one reached 23-26% in 60-120 s
(``benchmarks/bench_cobb_quick.py``). The quick profile trains it; the paper profile the heatmap network.

Why these choices:

* the stride-32 feature map is flattened, not averaged: a global average throws away where the spine is;
* the output is an offset from the training films' mean shape (:meth:`CornerRegressionNet.fit_prior`), with the last
  layer starting at zero, so the first step already predicts the average spine and training spends its steps on
  the curve;
* the loss adds the endplates' angles to the corners' positions: the Cobb angle is a difference of endplate tilts,
  and a corner error along an endplate costs no angle while one across it does (validation SMAPE 37% with it,
  43% without, 60 s, one seed);
* the offset is multiplied by ``offset_gain`` (a saved buffer, 1 while training), which the Cobb task sets after
  training to the gain that gives the lowest validation SMAPE (:meth:`spinebench.tasks.cobb.CobbTask.calibrate`).
  A regression trained for a CPU's minute reads every curve flatter than it is: its offsets are pulled towards the
  mean spine, so its angles are too (predicted against true largest angle: slope 0.6-0.7 on the synthetic
  validation films, 0.3-0.4 on real AASCE films). One number fitted on validation, as the classifiers' thresholds
  are, undoes the part of that pull the validation films show; the corners drawn and the angles measured from them
  stay one and the same.

Inputs follow the spinebench pixel contract, (B, 1, H, W) in [0, 1]; the default input is 192 x 96 (H x W), aspect
not kept (predictions are mapped back per axis, as for the heatmap network). The output is (B, 68, 2): corners
in input pixels, TL, TR, BL, BR per vertebra, T1 to L5.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from spinebench.cobb import N_LANDMARKS, N_VERTEBRAE
from spinebench.models.cobb_net import LandmarkModel, canonical_landmarks
from spinebench.models.pretrained import create_timm_model
from spinebench.models.registry import register_model

_STRIDE = 32
_OFFSET_SCALE = 0.1    # the head's output, times this, is the offset from the prior in image fractions
_SLOPE_WEIGHT = 1.0    # endplate-angle term of the loss (radians) against the corner term (image fractions)
PAPER_NAME = "Direct landmark regression (Wu et al. 2017, BoostNet's approach)"


def _straight_spine() -> torch.Tensor:
    """(68, 2) a plain vertical column in image fractions: the prior until :meth:`fit_prior` sets the data's."""
    ys = torch.linspace(0.12, 0.88, N_VERTEBRAE)
    half_h = 0.3 * (ys[1] - ys[0])
    corners = [(-0.08, -1), (0.08, -1), (-0.08, 1), (0.08, 1)]
    pts = [[0.5 + dx, float(y) + sy * float(half_h)] for y in ys for dx, sy in corners]
    return torch.tensor(pts)


def endplate_angles(pts: torch.Tensor) -> torch.Tensor:
    """(B, 17, 2) the upper and lower endplate angle of each vertebra (radians) from (B, 68, 2) corners."""
    v = pts.reshape(-1, N_VERTEBRAE, 4, 2)
    top, bottom = v[:, :, 1] - v[:, :, 0], v[:, :, 3] - v[:, :, 2]
    return torch.stack([torch.atan2(top[..., 1], top[..., 0]), torch.atan2(bottom[..., 1], bottom[..., 0])], -1)


def flat_regression_head(channels: int, map_hw: tuple[int, int], outputs: int, reduce_channels: int = 32,
                         hidden: int = 256) -> tuple[nn.Sequential, nn.Sequential]:
    """(reduce, head) for regressing ``outputs`` numbers from a (channels, *map_hw) feature map: a 1x1 conv to
    ``reduce_channels`` + BN + ReLU, then (after flattening, which keeps where things are) an MLP of ``hidden``
    whose last layer starts at zero, so the first steps predict the regression's offset (a prior, the mean).
    Also the classifiers' spatial spine-shape head (``tasks.classification.SpineShapeHead``)."""
    reduce = nn.Sequential(nn.Conv2d(channels, reduce_channels, 1, bias=False), nn.BatchNorm2d(reduce_channels),
                           nn.ReLU(inplace=True))
    head = nn.Sequential(nn.Linear(reduce_channels * map_hw[0] * map_hw[1], hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, outputs))
    nn.init.zeros_(head[-1].weight)
    nn.init.zeros_(head[-1].bias)
    return reduce, head


class CornerRegressionNet(LandmarkModel):
    """A timm backbone whose stride-32 map, reduced and flattened, regresses 68 corners (see the module docstring)."""

    many_looks = True  # 18 looks: SMAPE on unseen synthetic films 21.3 -> 18.0%, on real ones 26.6 -> 22.7%

    def __init__(self, backbone: str = "resnet10t", pretrained: str = "none", input_size=(192, 96),
                 reduce_channels: int = 32, hidden: int = 256, model_name: str = "cobb_regress_resnet10t",
                 input_norm: str = "none"):
        super().__init__()
        self.set_input_norm(input_norm)
        h, w = (int(v) for v in input_size)
        if h % _STRIDE or w % _STRIDE:
            raise ValueError(f"input_size must be multiples of {_STRIDE} (the backbone's stride), got {input_size}")
        self.backbone, self.pretrained_loaded = create_timm_model(
            backbone, model_name, pretrained, features_only=True, in_chans=1, out_indices=(4,))
        c = self.backbone.feature_info.channels()[-1]
        self.reduce, self.head = flat_regression_head(c, (h // _STRIDE, w // _STRIDE), 2 * N_LANDMARKS,
                                                      reduce_channels, hidden)
        self.register_buffer("prior", _straight_spine())          # (68, 2) image fractions, saved with the weights
        self.register_buffer("size_xy", torch.tensor([float(w), float(h)]))
        self.register_buffer("offset_gain", torch.tensor(1.0))   # set on validation after training (docstring)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # weights saved before the gain existed were used at gain 1 (as torch's BatchNorm fills in a missing
        # num_batches_tracked)
        state_dict.setdefault(prefix + "offset_gain", torch.tensor(1.0))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def fit_prior(self, landmarks: torch.Tensor) -> None:
        """Set the prior to the mean shape of (N, 68, 2) training landmarks in input pixels (NaN rows ignored)."""
        pts = canonical_landmarks(landmarks.float().cpu())
        keep = torch.isfinite(pts).all(-1).all(-1)
        if keep.any():
            self.prior.copy_((pts[keep] / self.size_xy.cpu()).mean(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - 0.5) / 0.25  # the pixel contract is [0, 1]; centre it like an ImageNet-normalised grey image
        f = self.reduce(self.backbone(x)[-1]).flatten(1)
        offset = self.head(f).float().view(-1, N_LANDMARKS, 2) * (_OFFSET_SCALE * self.offset_gain)
        return (self.prior + offset) * self.size_xy

    def decode(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network output -> ((B, 68, 2) landmarks in input pixels, (B, 17) vertebra scores: all 1, as every
        vertebra is always placed)."""
        return out.float(), torch.ones(out.shape[0], N_VERTEBRAE, device=out.device)

    def landmark_loss(self, out: torch.Tensor, landmarks: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Smooth L1 on the corners (image fractions) + smooth L1 on the endplate angles (radians)."""
        out, target = out.float(), canonical_landmarks(landmarks.float())
        pos = F.smooth_l1_loss(out / self.size_xy, target / self.size_xy, beta=0.01)
        ang = F.smooth_l1_loss(endplate_angles(out), endplate_angles(target), beta=0.02)
        return pos + _SLOPE_WEIGHT * ang, {"corners": float(pos.detach()), "angles": float(ang.detach())}


@register_model(task="cobb", paper_name=PAPER_NAME,
                input_size=(192, 96), weights="timm:resnet10t",
                card="""All 68 corner landmarks (T1-L5) regressed at once from a grey-level ResNet-10-T's flattened
                stride-32 features, as offsets from the training films' mean spine; loss on corners and endplate
                angles -> the three AASCE Cobb angles via spinebench.cobb. Input 192 x 96 (H x W), aspect not kept.
                The quick profile's Cobb model: it learns in the minute a CPU run gives it, where the heatmap
                network does not; the quick profile builds it with input_norm="local" (each film locally
                contrast-normalised and equalised, spinebench.data.transforms.local_contrast), which carries it
                from synthetic to real films (real AASCE SMAPE 31.1 -> 27.0%, three seeds). After training its offsets
                from the mean spine are scaled by a gain chosen on the validation films (offset_gain, saved with the
                weights: a minute's regression reads curves flatter than they are). Not in the paper spinebench
                starts from (it has no Cobb angle).""")
def cobb_regress_resnet10t(pretrained: str = "none", input_size=(192, 96), **kwargs) -> nn.Module:
    """Direct corner regression on a grey-level ResNet-10-T."""
    model = CornerRegressionNet("resnet10t", pretrained, input_size=input_size, model_name="cobb_regress_resnet10t",
                                **kwargs)
    h, w = (int(v) for v in input_size)
    model.default_cfg = {"name": "cobb_regress_resnet10t", "task": "cobb", "input_size": (h, w),
                         "paper_name": PAPER_NAME, "num_landmarks": N_LANDMARKS,
                         "backbone": "resnet10t", "output": "68 corners (x, y) in input pixels",
                         "input_norm": model.input_norm}
    return model
