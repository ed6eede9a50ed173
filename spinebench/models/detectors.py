"""The paper's two Faster R-CNN detectors, rebuilt with torchvision's FasterRCNN on timm Inception backbones.

API (torchvision detection): ``model(images)`` with ``images`` a list of ``1 x H x W`` float tensors in [0, 1]
(the pixel contract); train mode ``model(images, targets)`` -> loss dict; eval -> one dict per image with
``boxes`` (x1, y1, x2, y2, input pixels), ``labels`` in {1: Lum, 2: sco} and ``scores``. Class 0 is background.

Design, shared by both (the "why" of each choice):

- FPN over strides 8 / 16 / 32, 256 channels. Screws are ~10-30 px at the detector's input scale: a stride-8
  level is needed for them, while the scoliosis box spans many vertebrae and wants a coarse level. A single
  stride-16 map (the TF Object Detection API's choice) puts a 16 px screw on one cell.
- Anchors: sizes (16, 24, 32) at stride 8, (48, 64, 96) at 16, (128, 224, 384) at 32; aspect ratios h/w of
  0.5, 1, 2, 4 (up to w:h = 1:4 for the tall curve box; 384 at 1:4 is 768 x 192, inside the 832 px cap).
- Feature maps aligned: the Inception backbones use VALID paddings, so their maps are smaller than H / stride and
  drift against the anchor grid and RoIAlign (a 16 px screw pooled ~16 px off). As the TF OD API does for these
  very models (``align_feature_maps=True``), valid paddings are made SAME; the weights are unchanged.
- Input: GeneralizedRCNNTransform with ``min_size=512, max_size=832`` by default (CPU-sized; a full-spine AP
  image ~1:2.5 comes in at ~333 x 832), one-channel mean/std 0.5 (what timm's Inception weights expect).
- ``pretrained`` loads the ImageNet backbone (timm; first conv summed to one channel). COCO / Open Images
  weights for these exact detectors exist in neither torchvision nor timm. With ImageNet weights the backbone's
  BatchNorm is frozen (torchvision's rule for pretrained detection backbones: detection batches are 1-4 images);
  from random init it trains. Without ImageNet weights, :mod:`spinebench.models.transfer` starts the body from a
  classifier trained on the training split (in-domain transfer) and freezes its BatchNorm the same way.
- ``class_nms_thresh`` (e.g. ``{"Lum": 0.3}``, the quick profile's): a stricter NMS for the classes named, after
  torchvision's one ``box_nms_thresh`` (0.5) for all; one implant construct is one ``Lum`` box (:func:`class_nms`).
- ``class_box_fusion`` (e.g. ``{"Lum": 0.2}``, the quick profile's since session 30, with ``box_nms_thresh=0.7``):
  the boxes of the classes named that overlap a better one are fused into their score-weighted mean
  (:func:`fuse_boxes`) instead of dropped: the quick detectors' loose boxes around one construct partly cancel.
- ``box_score_thresh`` (torchvision's, 0.05 by default; both profiles' 0.001): the lowest box score kept. A film's
  implant score is its best ``Lum`` box's, 0 with none, so a floor ties every film a detector is unsure of at 0;
  the profiles keep the low boxes, which still rank films (``benchmarks/bench_score_floor.py``).
- RoIAlign (7 x 7, 2 samples a bin, torchvision's MultiScaleRoIAlign levels) computed as matrix products on the
  CPU (:mod:`spinebench.models.roi_pool`: the same numbers; torchvision's CPU backward is a single-threaded loop):
  a quick training step 1.12-1.13x faster for Inception-v2, 1.05-1.08x for Inception-ResNet-v2 on a 2-core CPU
  (``benchmarks/bench_roi_pool.py``). No weights: old detectors load and predict as before.
- ``box_giou_weight`` (1.0 for the quick profile's Inception-v2; 0, torchvision's loss, by default): the RoI
  head's training loss adds a generalised-IoU loss on its positive boxes (:class:`FindingRoIHeads`). AP@0.5
  scores a box's overlap, which the smooth-L1 loss on box deltas does not; training only, so the weights and
  inference are torchvision's.
- ``representation_size`` (256 for the quick profile's detectors; torchvision's 1024 by default): the width of
  torchvision's two-layer box head. At 1024 its 12,544 x 1,024 layer and that layer's AdamW state were ~16% of a
  quick Inception-v2 step on a 2-core CPU and ~22% of Inception-ResNet-v2's (its body frozen); at 256 the same
  seconds buy 20-35% more steps, and the boxes got better with them (docs/results.md, session 42). The TF Object
  Detection API's Inception detectors have no such layer at all.
- ``fpn_norm="gn"``: GroupNorm(32) after every FPN conv (off by default, torchvision's plain FPN). Needed when the
  body is frozen after an in-domain transfer: the classifier's last maps are ~10x larger than at init and a plain
  FPN hands that to untrained heads (first losses ~50 instead of ~2); with a body that trains it measured no gain.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.ops import FeaturePyramidNetwork, generalized_box_iou_loss
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from spinebench import LABEL_MAP, LABEL_NAMES
from spinebench.errors import SpinebenchError
from spinebench.models.pretrained import create_timm_model
from spinebench.models.registry import model_entry, register_model
from spinebench.models.roi_pool import MatmulMultiScaleRoIAlign

#: Anchor sizes per FPN level (strides 8, 16, 32) and aspect ratios h / w; see the module docstring.
ANCHOR_SIZES = ((16, 24, 32), (48, 64, 96), (128, 224, 384))
ASPECT_RATIOS = (0.5, 1.0, 2.0, 4.0)
#: timm's Inception weights normalise to (x - 0.5) / 0.5 for every channel.
INCEPTION_MEAN_1CH = (0.5,)
INCEPTION_STD_1CH = (0.5,)


def _pad1_pre_hook(module: nn.Module, args: tuple) -> tuple:
    """Zero-pad a block's input by 1 px so its VALID 3x3 / stride-2 branches give ceil(n / 2) (SAME)."""
    return (F.pad(args[0], (1, 1, 1, 1)),) + tuple(args[1:])


def align_feature_maps(body: nn.Module, prepad_blocks: Sequence[str] = ()) -> None:
    """Turn VALID paddings into SAME (TF OD API's ``align_feature_maps``), in place, weights untouched.

    Module convs / pools with zero padding get ``(k - 1) // 2``; blocks that pool functionally (timm's
    InceptionB/D call ``F.max_pool2d``) instead get their input padded by a pre-hook. Afterwards a stride-s map of
    an H x W input is exactly ceil(H / s) x ceil(W / s) and cell j sits at pixel s * j, the convention of
    torchvision's anchors and RoIAlign.
    """
    skip: set[int] = set()
    for name in prepad_blocks:
        block = body.get_submodule(name)
        block.register_forward_pre_hook(_pad1_pre_hook)
        skip.update(id(m) for m in block.modules())
    for m in body.modules():
        if id(m) in skip:
            continue
        if isinstance(m, nn.Conv2d) and m.padding == (0, 0) and max(m.kernel_size) > 1:
            m.padding = tuple(d * (k - 1) // 2 for k, d in zip(m.kernel_size, m.dilation))
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) and m.padding in (0, (0, 0)):
            k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
            if k > 1:
                m.padding = k // 2


def make_atrous(body: nn.Module, stage: str) -> None:
    """Output stride 32 -> 16: the downsampling of ``stage`` goes to stride 1 and every later conv with a kernel
    above 1 is dilated by 2 (torchvision's ``replace_stride_with_dilation``). Pretrained weights stay valid: the
    same filters see the same neighbours, sampled twice as densely. Call after :func:`align_feature_maps`."""
    names = [n for n, _ in body.named_children()]
    if stage not in names:
        raise ValueError(f"no stage {stage!r} in {names}")
    for m in body.get_submodule(stage).modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            m.stride = 1 if isinstance(m, nn.MaxPool2d) else (1, 1)
    for later in names[names.index(stage) + 1:]:
        for m in body.get_submodule(later).modules():
            if isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1:
                m.dilation = tuple(2 if k > 1 else 1 for k in m.kernel_size)
                m.padding = tuple(d * (k - 1) // 2 for k, d in zip(m.kernel_size, m.dilation))


FPN_NORMS = (None, "gn")


def _fpn_norm_layer(norm: str | None):
    """``None``: torchvision's plain FPN (conv + bias). ``"gn"``: GroupNorm(32) after every FPN conv."""
    if norm not in FPN_NORMS:
        raise SpinebenchError(f"fpn_norm must be one of {FPN_NORMS}; got {norm!r}")
    return functools.partial(nn.GroupNorm, 32) if norm == "gn" else None


class TimmFpnBackbone(nn.Module):
    """A timm ``features_only`` body followed by an FPN; exposes ``out_channels`` as torchvision expects."""

    def __init__(self, body: nn.Module, in_channels: Sequence[int], out_channels: int = 256,
                 extra_pool: bool = False, norm: str | None = None):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels,
                                         extra_blocks=LastLevelMaxPool() if extra_pool else None,
                                         norm_layer=_fpn_norm_layer(norm))
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def class_nms(detections: list[dict], thresholds: dict[int, float]) -> list[dict]:
    """A second, stricter non-maximum suppression for the classes in ``thresholds`` (label -> IoU), after
    torchvision's one threshold for all classes (``box_nms_thresh``). Each image's boxes come back sorted by score.

    Why per class: an implant construct is one ``Lum`` box, and a detector trained for a minute also scores boxes over
    part of it (the upper half of a rod, the screws of one level) at 0.4-0.7. Those overlap the whole-construct box
    by IoU 0.1-0.5, so torchvision's 0.5 keeps them, and at AP@0.5 each is a false positive above most true ones
    (the quick Inception-v2 detector on 600 unseen synthetic films: 329 such boxes and 100 true ones above the true
    ones' median score). The scoliosis box wants the looser threshold: its AP falls as the threshold does.
    """
    from torchvision.ops import nms

    out = []
    for det in detections:
        keep = torch.ones(len(det["scores"]), dtype=torch.bool, device=det["scores"].device)
        for label, thr in thresholds.items():
            idx = torch.nonzero(det["labels"] == label).flatten()
            if len(idx) > 1:
                keep[idx] = False
                keep[idx[nms(det["boxes"][idx].float(), det["scores"][idx].float(), thr)]] = True
        out.append(_kept_by_score(det, keep))
    return out


def _kept_by_score(det: dict, keep: torch.Tensor) -> dict:
    """The entries of one image's detections where ``keep``, sorted by falling score."""
    kept = {k: v[keep] for k, v in det.items()}
    order = kept["scores"].argsort(descending=True)
    return {k: v[order] for k, v in kept.items()}


def fuse_boxes(detections: list[dict], thresholds: dict[int, float]) -> list[dict]:
    """Weighted box fusion for the classes in ``thresholds`` (label -> IoU), after torchvision's NMS: a class's boxes,
    taken by falling score, each gather the boxes still free that overlap them by IoU >= the threshold, and the group
    becomes one box, the score-weighted mean of its boxes, scored by its best (so image-level scores, the best box's,
    do not change). Each image's boxes come back sorted by score.

    Why (WBF, Solovyev et al. 2021, here within one model): a quick detector puts several boxes on one implant
    construct, most of them loose (too large or shifted, IoU 0.2-0.5 with the construct; NMS keeps the best-scored of
    them, which is often not the best-placed) and their errors partly cancel. Chosen on validation films (8 quick
    detectors, ``Lum`` AP@0.5 0.35 -> 0.62 on average against an NMS at IoU 0.3) and checked on 600 unseen synthetic
    films (``benchmarks/bench_box_fusion.py``; README, *Fused ``Lum`` boxes*).
    """
    from torchvision.ops import box_iou

    out = []
    for det in detections:
        keep = torch.ones(len(det["scores"]), dtype=torch.bool, device=det["scores"].device)
        boxes = det["boxes"].clone()
        for label, thr in thresholds.items():
            idx = torch.nonzero(det["labels"] == label).flatten()
            if len(idx) < 2:
                continue
            idx = idx[det["scores"][idx].argsort(descending=True)]
            b, s = det["boxes"][idx].float(), det["scores"][idx].float()
            near = box_iou(b, b) >= thr
            free = torch.ones(len(idx), dtype=torch.bool, device=b.device)
            for i in range(len(idx)):
                if not free[i]:
                    continue
                group = near[i] & free
                free &= ~group
                if int(group.sum()) > 1:
                    w = s[group]
                    boxes[idx[i]] = ((b[group] * w[:, None]).sum(0) / w.sum().clamp(min=1e-12)).to(boxes.dtype)
                    keep[idx[group]] = False
                    keep[idx[i]] = True
        out.append(_kept_by_score({**det, "boxes": boxes}, keep))
    return out


def _unit_boxes(deltas: torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """Box-coder ``deltas`` (dx, dy, dw, dh, scaled by ``weights``) applied to a unit proposal centred at (0.5, 0.5):
    the box in the proposal's own frame, so an overlap loss on it weighs a screw and a curve box alike."""
    wx, wy, ww, wh = weights
    clamp = math.log(1000.0 / 16)  # torchvision BoxCoder's bbox_xform_clip
    cx, cy = deltas[:, 0] / wx + 0.5, deltas[:, 1] / wy + 0.5
    w, h = torch.exp((deltas[:, 2] / ww).clamp(max=clamp)), torch.exp((deltas[:, 3] / wh).clamp(max=clamp))
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)


class FindingRoIHeads(RoIHeads):
    """torchvision RoIHeads whose training loss adds ``box_giou_weight`` x a generalised-IoU loss on the positive
    proposals' boxes (``loss_box_giou``, normalised like torchvision's smooth-L1 ``loss_box_reg``: by the sampled
    proposals). Why: the quick detectors find the hardware but outline it loosely (on real films a ``Lum`` box at
    IoU >= 0.3 on 0.68-0.74 of implant films, at >= 0.5 on 0.29-0.37), and AP@0.5 scores the overlap itself; the
    smooth-L1 loss on box deltas does not (three times louder, it did worse). Its training sample also keeps every
    target box labelled 0 as a negative (:meth:`select_training_samples`: hard negatives). Inference is
    torchvision's; every detector has these heads (the same modules and weights as torchvision's)."""

    box_giou_weight: float = 0.0

    @classmethod
    def from_heads(cls, heads: RoIHeads, box_giou_weight: float) -> "FindingRoIHeads":
        """``heads`` (FasterRCNN's own, built from its keyword arguments) with the GIoU term; the same modules."""
        new = cls(heads.box_roi_pool, heads.box_head, heads.box_predictor,
                  heads.proposal_matcher.high_threshold, heads.proposal_matcher.low_threshold,
                  heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction,
                  heads.box_coder.weights, heads.score_thresh, heads.nms_thresh, heads.detections_per_img)
        new.box_giou_weight = float(box_giou_weight)
        return new

    def select_training_samples(self, proposals, targets):
        """torchvision's sample of proposals, plus every target box labelled 0 as a negative.

        A box labelled 0 (background) marks a region known to hold no finding, a *hard negative*: with
        ``sco_hard_negatives`` the detection task gives each film without scoliosis boxes over its straight column
        (``tasks.detection.hard_negative_boxes``). torchvision's sampler draws its negatives at random among ~300
        proposals, and a quick detector that never had to tell a straight column from a curved one scored every
        film's ``sco`` boxes near the training set's scoliosis prior (test AUROC 0.22-0.38, below chance).
        Matching sees these boxes like any other (a proposal over one is background); the RPN takes them as
        objects, so it proposes the column on every film and the head learns which columns curve.
        """
        proposals, matched_idxs, labels, regression_targets = super().select_training_samples(proposals, targets)
        regression_targets = list(regression_targets)  # BoxCoder.encode gives a tuple
        for k, t in enumerate(targets):
            neg = t["boxes"][t["labels"] == 0].to(proposals[k].dtype)
            if len(neg):
                proposals[k] = torch.cat([proposals[k], neg])
                matched_idxs[k] = torch.cat([matched_idxs[k], matched_idxs[k].new_zeros(len(neg))])
                labels[k] = torch.cat([labels[k], labels[k].new_zeros(len(neg))])
                regression_targets[k] = torch.cat([regression_targets[k],
                                                   regression_targets[k].new_zeros(len(neg), 4)])
        return proposals, matched_idxs, labels, regression_targets

    def forward(self, features, proposals, image_shapes, targets=None):
        if not (self.training and self.box_giou_weight):
            return super().forward(features, proposals, image_shapes, targets)
        proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        class_logits, box_regression = self.box_predictor(box_features)
        loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        labels, regression_targets = torch.cat(labels, 0), torch.cat(regression_targets, 0)
        pos = torch.where(labels > 0)[0]
        deltas = box_regression.reshape(labels.numel(), -1, 4)[pos, labels[pos]]
        weights = self.box_coder.weights
        giou = generalized_box_iou_loss(_unit_boxes(deltas.float(), weights),
                                        _unit_boxes(regression_targets[pos].float(), weights), reduction="sum")
        return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg,
                    "loss_box_giou": self.box_giou_weight * giou / labels.numel()}


class FindingDetector(FasterRCNN):
    """torchvision FasterRCNN that checks the pixel contract (one channel) at the door, and applies the per-class
    NMS thresholds of ``class_nms_thresh`` (label -> IoU; :func:`class_nms`), then the per-class box fusion of
    ``class_box_fusion`` (label -> IoU; :func:`fuse_boxes`) to what it detects."""

    class_nms_thresh: dict[int, float] = {}
    class_box_fusion: dict[int, float] = {}

    def forward(self, images, targets=None):
        for img in images:
            if img.dim() != 3 or img.shape[0] != 1:
                raise SpinebenchError(f"{self.default_cfg.get('name', 'detector')} takes a list of 1 x H x W "
                                      f"images in [0, 1]; got one of shape {tuple(img.shape)}")
        out = super().forward(images, targets)
        if self.training:
            return out
        if self.class_nms_thresh:
            out = class_nms(out, self.class_nms_thresh)
        return fuse_boxes(out, self.class_box_fusion) if self.class_box_fusion else out


def _class_ious(arg: str, value: dict[str, float] | None) -> dict[str, float]:
    """``value`` (class name -> IoU in (0, 1]) as a plain dict, or a SpinebenchError naming ``arg``."""
    value = dict(value or {})
    if set(value) - set(LABEL_MAP) or not all(0.0 < float(v) <= 1.0 for v in value.values()):
        raise SpinebenchError(f"{arg} maps class names ({', '.join(LABEL_MAP)}) to an IoU in (0, 1]; got {value}")
    return value


def _build_detector(name: str, arch: str, pretrained: str, out_indices: tuple[int, ...],
                    prepad_blocks: Sequence[str] = (), atrous_stage: str | None = None, *,
                    num_classes: int, min_size: int, max_size: int, fpn_channels: int,
                    anchor_sizes: Sequence[Sequence[int]], aspect_ratios: Sequence[float],
                    fpn_norm: str | None = None, class_nms_thresh: dict[str, float] | None = None,
                    class_box_fusion: dict[str, float] | None = None, box_giou_weight: float = 0.0,
                    representation_size: int = 1024, **frcnn_kwargs: Any) -> FindingDetector:
    entry = model_entry(name)
    if not 0.0 <= float(box_giou_weight) < float("inf"):
        raise SpinebenchError(f"box_giou_weight is a weight >= 0; got {box_giou_weight}")
    if isinstance(representation_size, bool) or not isinstance(representation_size, int) or representation_size < 1:
        raise SpinebenchError(f"representation_size is the box head's width, a whole number >= 1; got "
                              f"{representation_size}")
    class_nms_thresh = _class_ious("class_nms_thresh", class_nms_thresh)  # checked before the backbone is built
    class_box_fusion = _class_ious("class_box_fusion", class_box_fusion)
    body, loaded = create_timm_model(arch, name, pretrained, features_only=True, out_indices=out_indices,
                                     in_chans=1)
    channels = body.feature_info.channels()
    align_feature_maps(body, prepad_blocks)
    if atrous_stage:
        make_atrous(body, atrous_stage)
    if loaded:
        from timm.layers import freeze_batch_norm_2d

        body = freeze_batch_norm_2d(body)
    n_levels = len(out_indices) + (1 if atrous_stage else 0)  # an atrous body gets a stride-32 pool level
    if len(anchor_sizes) != n_levels:
        raise SpinebenchError(f"{name} has {n_levels} feature levels; anchor_sizes gives {len(anchor_sizes)}")
    backbone = TimmFpnBackbone(body, channels, fpn_channels, extra_pool=bool(atrous_stage), norm=fpn_norm)
    featmaps = [str(i) for i in range(len(out_indices))] + (["pool"] if atrous_stage else [])
    anchors = AnchorGenerator(tuple(tuple(s) for s in anchor_sizes), (tuple(aspect_ratios),) * n_levels)
    defaults = dict(rpn_pre_nms_top_n_train=1000, rpn_pre_nms_top_n_test=500,
                    rpn_post_nms_top_n_train=1000, rpn_post_nms_top_n_test=300, box_batch_size_per_image=256)
    defaults.update(frcnn_kwargs)
    model = FindingDetector(
        backbone, num_classes=None, min_size=min_size, max_size=max_size,
        image_mean=list(INCEPTION_MEAN_1CH), image_std=list(INCEPTION_STD_1CH),
        rpn_anchor_generator=anchors,
        box_roi_pool=MatmulMultiScaleRoIAlign(featmap_names=featmaps, output_size=7, sampling_ratio=2),
        # torchvision's box head at its width; at torchvision's own width torchvision builds it, so a seed gives the
        # same initial weights as before the width could be set
        box_head=TwoMLPHead(fpn_channels * 7 * 7, representation_size) if representation_size != 1024 else None,
        box_predictor=FastRCNNPredictor(representation_size, num_classes),
        **defaults,
    )
    model.roi_heads = FindingRoIHeads.from_heads(model.roi_heads, box_giou_weight)
    model.pretrained_loaded = loaded
    model.class_nms_thresh = {LABEL_MAP[k]: float(v) for k, v in class_nms_thresh.items()}
    model.class_box_fusion = {LABEL_MAP[k]: float(v) for k, v in class_box_fusion.items()}
    model.default_cfg = dict(
        name=name, task=entry.task, architecture="torchvision FasterRCNN + FPN", backbone=f"timm.{arch}",
        paper_name=entry.paper_name, input_size=entry.input_size, min_size=min_size, max_size=max_size,
        in_chans=1, num_classes=num_classes, label_names=dict(LABEL_NAMES), mean=INCEPTION_MEAN_1CH,
        std=INCEPTION_STD_1CH, weights=entry.weights, pretrained_scope="ImageNet backbone only",
        feature_strides=(8, 16, 32), anchor_sizes=tuple(tuple(s) for s in anchor_sizes),
        aspect_ratios=tuple(aspect_ratios), atrous=bool(atrous_stage), fpn_norm=fpn_norm,
        box_nms_thresh=model.roi_heads.nms_thresh, box_score_thresh=model.roi_heads.score_thresh,
        class_nms_thresh=class_nms_thresh,
        class_box_fusion=class_box_fusion, box_giou_weight=float(box_giou_weight),
        representation_size=representation_size,
        classifier="roi_heads.box_predictor", first_conv="backbone.body (timm first conv, in_chans=1)",
    )
    return model


_COMMON_CARD = """Shared recipe: FPN (256 ch) over strides 8/16/32 so 10-30 px screws get a stride-8 level; anchors
    16-384 px with h:w ratios 0.5-4 for the tall scoliosis box; VALID paddings made SAME (TF OD API's
    align_feature_maps) so feature grids match anchors and RoIAlign; torchvision TwoMLPHead + FastRCNNPredictor
    (background, Lum, sco); input min side 512, long side <= 832. "pretrained" means the ImageNet backbone only:
    the paper's COCO / Open Images detector weights exist in neither torchvision nor timm."""


@register_model(
    task="detection", paper_name="faster_rcnn_inception_v2_coco", input_size=(832, 512),
    weights="timm:inception_v3",
    card="""Faster R-CNN on timm's Inception v3 (features at strides 8/16/32: Mixed_5d, Mixed_6e, Mixed_7c).
    The paper's backbone is Inception v2 (BN-Inception), which exists in neither torchvision nor timm; v3 is the
    nearest Inception available with ImageNet weights (larger: ~22 M backbone parameters vs ~10 M).
    """ + _COMMON_CARD)
def det_faster_rcnn_inception_v2(pretrained: str = "none", num_classes: int = 1 + len(LABEL_NAMES),
                                 min_size: int = 512, max_size: int = 832, fpn_channels: int = 256,
                                 anchor_sizes: Sequence[Sequence[int]] = ANCHOR_SIZES,
                                 aspect_ratios: Sequence[float] = ASPECT_RATIOS, **kwargs: Any) -> nn.Module:
    return _build_detector("det_faster_rcnn_inception_v2", "inception_v3", pretrained, (2, 3, 4),
                           prepad_blocks=("Mixed_6a", "Mixed_7a"), num_classes=num_classes, min_size=min_size,
                           max_size=max_size, fpn_channels=fpn_channels, anchor_sizes=anchor_sizes,
                           aspect_ratios=aspect_ratios, **kwargs)


@register_model(
    task="detection", paper_name="faster_rcnn_inception_resnet_v2_atrous_oidv2", input_size=(832, 512),
    weights="timm:inception_resnet_v2",
    card="""Faster R-CNN on timm's Inception-ResNet-v2 with an atrous last stage: Mixed_7a's downsampling goes
    to stride 1 and the later convs are dilated by 2, so its 1536-channel output stays at stride 16 (timm's
    output_stride argument is not implemented for this model; the surgery is torchvision's
    replace_stride_with_dilation). FPN inputs: stride 8 (repeat, 320 ch) and the atrous stride-16 output, plus
    a max-pooled stride-32 level. The TF OD API model dilates one stage earlier (output stride 8) and runs the
    last stage per RoI; we keep output stride 16 for CPU cost and use the shared FPN head. Its weights were
    Open Images v2; ours are ImageNet (backbone only).
    """ + _COMMON_CARD)
def det_faster_rcnn_inception_resnet_v2(pretrained: str = "none", num_classes: int = 1 + len(LABEL_NAMES),
                                        min_size: int = 512, max_size: int = 832, fpn_channels: int = 256,
                                        anchor_sizes: Sequence[Sequence[int]] = ANCHOR_SIZES,
                                        aspect_ratios: Sequence[float] = ASPECT_RATIOS,
                                        **kwargs: Any) -> nn.Module:
    return _build_detector("det_faster_rcnn_inception_resnet_v2", "inception_resnet_v2", pretrained, (2, 4),
                           atrous_stage="mixed_7a", num_classes=num_classes, min_size=min_size,
                           max_size=max_size, fpn_channels=fpn_channels, anchor_sizes=anchor_sizes,
                           aspect_ratios=aspect_ratios, **kwargs)
