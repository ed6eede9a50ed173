"""The paper's transfer-learning classifiers: torchvision ResNet-50, DenseNet-121, SqueezeNet 1.1, Inception v3.

Each takes the pixel contract (``B x 1 x H x W`` float in [0, 1], bright = dense), normalises inside with the
ImageNet mean/std collapsed to one channel, and returns ``B x 2`` LOGITS in ``spinebench.FINDINGS`` order
(implant, scoliosis). Two independent sigmoids, applied OUTSIDE the model by whoever needs probabilities, so an
image can have both findings. The first conv takes one channel: ImageNet RGB weights are summed over the input
channels (timm's ``adapt_input_conv``).

Input size: square by default (224, Inception 299) because that is what the ImageNet weights saw and what the
paper did (48 x 48 squares); all four end in adaptive pooling, so tall inputs (e.g. 384 x 160 for a full spine)
work unchanged and the engine may choose them. Smallest inputs that run: ResNet-50, DenseNet-121, SqueezeNet 1.1
accept the paper's 48 x 48; Inception v3 needs >= 75 x 75 (upsample the paper's 48 px images).

Inception v3 in train mode returns ``(logits, aux_logits)``; the engine adds 0.4 x the aux loss as torchvision's
classification reference does. In eval mode it returns logits only.

``implant_pool`` (a constructor argument of all four, kept in ``default_cfg`` and a weights record's
``model_kwargs``): how the map before pooling becomes the implant logit. ``"avg"`` is torchvision's (global average
pooling, then the classifier layer); ``"lse"`` applies the classifier layer to every cell of the map (the class
activation map) and pools the implant class by log-sum-exp (:func:`pool_class_maps`), the scoliosis class by the
mean as before. Same parameters and state-dict keys either way.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models as tvm
from torchvision.models.inception import InceptionAux

from spinebench import FINDINGS
from spinebench.data.transforms import check_downsample
from spinebench.errors import SpinebenchError
from spinebench.models.pretrained import (load_torchvision_state_dict, replace_submodule, report_unloadable,
                                          to_one_channel)
from spinebench.models.registry import model_entry, register_model

# ImageNet mean/std collapsed to one channel (mean of the RGB values), as for a grey image replicated to RGB.
IMAGENET_MEAN_1CH = (0.449,)
IMAGENET_STD_1CH = (0.226,)
# torchvision's Inception v3 weights expect (x - 0.5) / 0.5 (what its transform_input=True computes); we keep
# transform_input off and normalise to that directly.
INCEPTION_MEAN_1CH = (0.5,)
INCEPTION_STD_1CH = (0.5,)

#: how a classifier may pool its implant class map into the implant logit (``implant_pool``; :func:`pool_class_maps`)
IMPLANT_POOLS = ("avg", "lse")
#: log-sum-exp sharpness r: (1 / r) log(mean over cells of exp(r x)) runs from the mean (r -> 0) to the max
LSE_SHARPNESS = 2.0


def check_implant_pool(mode: str) -> str:
    """``mode`` if it is one of :data:`IMPLANT_POOLS`, else a SpinebenchError naming the choices."""
    if mode not in IMPLANT_POOLS:
        raise SpinebenchError(f"unknown implant_pool {mode!r} (expected one of {', '.join(IMPLANT_POOLS)})")
    return mode


def pool_class_maps(maps: torch.Tensor, implant_pool: str) -> torch.Tensor:
    """(B, K, N) per-cell logits (class activation maps, N cells) -> (B, K) logits: every class by the mean over
    the cells (global average pooling, as torchvision's heads), the implant class (:data:`spinebench.FINDINGS`
    order: first) by log-sum-exp when ``implant_pool`` is ``"lse"``.

    Why: hardware is local and often small (a single screw, a cage's marker pins: a cell or two of the map), while a
    curve spans the column. The mean over the cells dilutes one bright cell among films without hardware; the max
    does not, but trains through one cell at a time; log-sum-exp (sharpness :data:`LSE_SHARPNESS`) sits between,
    as in Wang et al., "ChestX-ray8" (CVPR 2017) for local findings on radiographs. Measured in the quick recipe
    (2-core CPU, paired seeds; ``docs/results.md``, session 38): DenseNet-121's implant AUROC on the 626 real hybrid
    films +0.041 (4 of 4 seeds higher), on 600 unseen synthetic films +0.011; SqueezeNet unchanged; ResNet-50
    lower (its scoliosis AUROC too); Inception-v3 mixed; so the quick profile builds DenseNet-121 only with it."""
    out = maps.mean(-1)
    if implant_pool == "lse":
        r = LSE_SHARPNESS
        imp = (torch.logsumexp(r * maps[:, 0].float(), -1) - math.log(maps.shape[-1])) / r
        out = torch.cat([imp[:, None].to(out.dtype), out[:, 1:]], 1)
    return out


class ClassMapPool(nn.Module):
    """SqueezeNet's global pooling after its 1x1 class conv, per class (:func:`pool_class_maps`): (B, K, H, W) ->
    (B, K, 1, 1)."""

    def __init__(self, implant_pool: str):
        super().__init__()
        self.implant_pool = check_implant_pool(implant_pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_class_maps(x.flatten(2), self.implant_pool)[..., None, None]


class ClassMapLinear(nn.Linear):
    """A classifier layer applied to every cell of the map before pooling, then pooled per class
    (:func:`pool_class_maps`); its input is the map, (B, C, H, W) or flattened to (B, C x H x W) (what ResNet's and
    Inception's ``forward`` hand it once their average pooling is the identity). The same ``weight`` and ``bias``
    as the ``nn.Linear`` it replaces, so the state-dict keys do not change."""

    def __init__(self, linear: nn.Linear, implant_pool: str):
        super().__init__(linear.in_features, linear.out_features, device=linear.weight.device,
                         dtype=linear.weight.dtype)
        self.implant_pool = check_implant_pool(implant_pool)
        with torch.no_grad():
            self.weight.copy_(linear.weight)
            self.bias.copy_(linear.bias)

    def cells(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's input as (B, C, N) features per cell."""
        return x.flatten(2) if x.dim() == 4 else x.reshape(x.shape[0], self.in_features, -1)

    def pooled_input(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C): the average-pooled features an ``nn.Linear`` head would have read (the spine-shape head's)."""
        return self.cells(x).mean(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = torch.einsum("bcn,kc->bkn", self.cells(x), self.weight) + self.bias[:, None]
        return pool_class_maps(maps, self.implant_pool)


class _DenseNetClassMaps(tvm.DenseNet):
    """torchvision's DenseNet with its functional global pooling left to the classifier layer (a
    :class:`ClassMapLinear`): ``forward`` is torchvision's without ``adaptive_avg_pool2d`` and ``flatten``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.relu(self.features(x)))


def densenet_head(net: nn.Module, a: torch.Tensor) -> torch.Tensor:
    """What DenseNet computes after its ``features`` (``a``), for either classifier layer."""
    if isinstance(net.classifier, ClassMapLinear):
        return net.classifier(F.relu(a))
    return net.classifier(torch.flatten(F.adaptive_avg_pool2d(F.relu(a), (1, 1)), 1))


def _pool_by_class(net: nn.Module, arch: str, implant_pool: str) -> None:
    """Make ``net`` (torchvision ``arch``, its 2-output classifier layer in place) pool its class maps per class
    (``implant_pool`` "lse"); "avg" leaves torchvision's network as it is."""
    if implant_pool == "avg":
        return
    if arch == "squeezenet1_1":
        net.classifier[3] = ClassMapPool(implant_pool)
    elif arch == "densenet121":
        net.__class__ = _DenseNetClassMaps
        net.classifier = ClassMapLinear(net.classifier, implant_pool)
    else:  # resnet50, inception_v3: average pooling -> identity, so the map reaches fc (flattened); Inception's
        # dropout then drops cells of the map rather than entries of the pooled vector
        net.avgpool = nn.Identity()
        net.fc = ClassMapLinear(net.fc, implant_pool)


def fit_min_input(size: tuple[int, int], minimum: tuple[int, int]) -> tuple[int, int]:
    """``size`` (H, W) scaled up, aspect kept, until both sides reach ``minimum`` (unchanged when they do).

    Why: a size chosen for every classifier can be below one model's minimum (Inception-v3 and the
    Inception-ResNet-v2 body need 75 px): the paper's 48 x 48 becomes 75 x 75, the quick profile's 128 x 56
    171 x 75, instead of a failed model."""
    k = max(1.0, minimum[0] / size[0], minimum[1] / size[1])
    return max(minimum[0], round(size[0] * k)), max(minimum[1], round(size[1] * k))


class FindingClassifier(nn.Module):
    """A torchvision classifier behind the pixel contract: ``B x 1 x H x W`` in [0, 1] -> ``B x 2`` logits."""

    def __init__(self, net: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 min_input_size: tuple[int, int], name: str):
        super().__init__()
        self.net = net
        self.name = name
        self.min_input_size = tuple(min_input_size)
        # not persistent: normalisation is part of the architecture, not of the weights
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor):
        if x.dim() != 4 or x.shape[1] != 1:
            raise SpinebenchError(f"{self.name} takes B x 1 x H x W images in [0, 1]; got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h < self.min_input_size[0] or w < self.min_input_size[1]:
            raise SpinebenchError(f"{self.name} needs inputs of at least {self.min_input_size[0]} x "
                                  f"{self.min_input_size[1]} pixels; got {h} x {w} (upsample them)")
        out = self.net((x - self.mean) / self.std)
        if isinstance(out, tvm.InceptionOutputs):  # train mode with the auxiliary head
            return out.logits, out.aux_logits
        return out


class _InceptionAuxAnySize(InceptionAux):
    """torchvision's Inception auxiliary head, usable below 299 px.

    torchvision pools Mixed_6e (17 x 17 at 299 px) with a 5 x 5 / stride 3 average to 5 x 5, then a valid 5 x 5
    conv: any input under 299 px crashes in train mode. Here maps under 17 px are pooled adaptively to 5 x 5
    instead; from 299 px up it is torchvision's computation exactly (same weights, same numbers).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) >= 17:
            x = F.avg_pool2d(x, kernel_size=5, stride=3)
        else:
            x = F.adaptive_avg_pool2d(x, (5, 5))
        x = self.conv1(self.conv0(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, (1, 1)), 1)
        return self.fc(x)


def _fix_densenet_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's DenseNet checkpoints use legacy names ('norm.1' for 'norm1'); its loader renames them."""
    import re

    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
    out = {}
    for key, value in state_dict.items():
        m = pattern.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


def _build(name: str, arch: str, pretrained: str, first_conv: str,
           heads: dict[str, Callable[[nn.Module], nn.Module]], mean: tuple[float, ...], std: tuple[float, ...],
           num_classes: int, fix_keys: Callable[[dict], dict] | None = None, downsample: str = "bilinear",
           implant_pool: str = "avg", **arch_kwargs: Any) -> FindingClassifier:
    """torchvision ``arch`` at its ImageNet shape, ImageNet weights loaded strictly (when asked and at hand), then
    the first conv made 1-channel and the classifier layer(s) replaced by ``num_classes`` outputs. Sizes, paper
    name and weights come from the registration, so they are written once. ``downsample`` is how films are shrunk
    to its input (``spinebench.data.transforms.resize``): part of the model's pixel contract, so it is a
    constructor argument, kept in ``default_cfg`` and in a weights record's ``model_kwargs``; so is
    ``implant_pool`` (module docstring)."""
    entry = model_entry(name)
    check_implant_pool(implant_pool)
    min_input_size = tuple(entry.extra["min_input_size"])
    net = getattr(tvm, arch)(weights=None, **arch_kwargs)
    state_dict = load_torchvision_state_dict(entry.weights.partition(":")[2], name, pretrained)
    loaded = False
    if state_dict is not None:
        try:
            net.load_state_dict(fix_keys(state_dict) if fix_keys else state_dict, strict=True)
            loaded = True
        except RuntimeError as e:  # a wrong or truncated file: never half-loaded weights
            report_unloadable(name, pretrained, f"{entry.weights}: {str(e).splitlines()[0]}")
            net = getattr(tvm, arch)(weights=None, **arch_kwargs)
    replace_submodule(net, first_conv, to_one_channel)
    classifier = []
    for path, make in heads.items():
        if any(True for _ in replace_submodule(net, path, make).parameters()):
            classifier.append(f"net.{path}")
    _pool_by_class(net, arch, implant_pool)
    model = FindingClassifier(net, mean, std, min_input_size, name)
    model.pretrained_loaded = loaded
    model.default_cfg = dict(
        name=name, task=entry.task, architecture=f"torchvision.models.{arch}", paper_name=entry.paper_name,
        input_size=entry.input_size, min_input_size=min_input_size, in_chans=1, num_classes=num_classes,
        outputs="logits", findings=FINDINGS if num_classes == len(FINDINGS) else None,
        mean=mean, std=std, weights=entry.weights, first_conv=f"net.{first_conv}",
        classifier=classifier, downsample=check_downsample(downsample), implant_pool=implant_pool,
    )
    return model


def _linear(num_classes: int) -> Callable[[nn.Module], nn.Module]:
    return lambda old: nn.Linear(old.in_features, num_classes)


@register_model(
    task="classification", paper_name="ResNet", input_size=(224, 224), min_input_size=(32, 32),
    weights="torchvision:ResNet50_Weights.DEFAULT",
    card="""torchvision ResNet-50 (25.6 M parameters with the ImageNet head). The paper says only "ResNet" (Keras);
    ResNet-50 is the depth Keras applications and most transfer-learning papers of 2020 default to. Changes: a
    1-channel first conv (ImageNet RGB weights summed), fc replaced by 2 logits (implant, scoliosis; two
    sigmoids outside the model, so an image can have both; the paper does not say how it mapped findings to
    outputs). Default input 224 x 224 (the paper used 48 x 48, which runs too).""")
def cls_resnet50(pretrained: str = "none", num_classes: int = len(FINDINGS),
                 downsample: str = "bilinear", implant_pool: str = "avg") -> nn.Module:
    return _build("cls_resnet50", "resnet50", pretrained, "conv1", {"fc": _linear(num_classes)},
                  IMAGENET_MEAN_1CH, IMAGENET_STD_1CH, num_classes, downsample=downsample, implant_pool=implant_pool)


@register_model(
    task="classification", paper_name="DenseNet", input_size=(224, 224), min_input_size=(32, 32),
    weights="torchvision:DenseNet121_Weights.DEFAULT",
    card="""torchvision DenseNet-121 (8.0 M parameters with the ImageNet head), the paper's best model. The paper
    says only "DenseNet"; 121 is the smallest and the Keras default. Changes: a 1-channel first conv (ImageNet
    RGB weights summed), classifier replaced by 2 logits (implant, scoliosis; independent sigmoids outside).
    Default input 224 x 224; the paper's 48 x 48 runs (smallest that runs: about 29 px). The quick profile
    builds it with implant_pool="lse": its implant logit is the log-sum-exp over the cells of the implant class
    map, not the mean (the scoliosis logit stays the mean; same parameters).""")
def cls_densenet121(pretrained: str = "none", num_classes: int = len(FINDINGS),
                    downsample: str = "bilinear", implant_pool: str = "avg") -> nn.Module:
    return _build("cls_densenet121", "densenet121", pretrained, "features.conv0",
                  {"classifier": _linear(num_classes)}, IMAGENET_MEAN_1CH, IMAGENET_STD_1CH, num_classes,
                  fix_keys=_fix_densenet_keys, downsample=downsample, implant_pool=implant_pool)


def _squeezenet_head(num_classes: int) -> Callable[[nn.Module], nn.Module]:
    def make(old: nn.Module) -> nn.Module:
        conv = nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
        nn.init.normal_(conv.weight, mean=0.0, std=0.01)  # torchvision's init for the final conv
        nn.init.zeros_(conv.bias)
        return conv

    return make


@register_model(
    task="classification", paper_name="SqueezeNet", input_size=(224, 224), min_input_size=(32, 32),
    weights="torchvision:SqueezeNet1_1_Weights.DEFAULT",
    card="""torchvision SqueezeNet 1.1 (1.2 M parameters), the paper's "SqueezeNet" (1.1 is the cheaper revision
    with the same accuracy). Its classifier is a 1x1 conv to the classes then ReLU and global average pooling;
    the conv is replaced by one with 2 outputs and the ReLU is DROPPED: ReLU'd logits are never negative, so
    every sigmoid probability would be >= 0.5. 1-channel first conv (ImageNet RGB weights summed). Default input
    224 x 224; the paper's 48 x 48 runs (smallest that runs: about 17 px).""")
def cls_squeezenet1_1(pretrained: str = "none", num_classes: int = len(FINDINGS),
                      downsample: str = "bilinear", implant_pool: str = "avg") -> nn.Module:
    return _build("cls_squeezenet1_1", "squeezenet1_1", pretrained, "features.0",
                  {"classifier.1": _squeezenet_head(num_classes), "classifier.2": lambda _: nn.Identity()},
                  IMAGENET_MEAN_1CH, IMAGENET_STD_1CH, num_classes, downsample=downsample, implant_pool=implant_pool)


@register_model(
    task="classification", paper_name="InceptionV3", input_size=(299, 299), min_input_size=(75, 75),
    weights="torchvision:Inception_V3_Weights.DEFAULT",
    card="""torchvision Inception v3 with its auxiliary classifier (27.2 M parameters with the ImageNet heads).
    fc and AuxLogits.fc replaced by 2 logits each; train mode returns (logits, aux_logits) and the engine adds
    0.4 x the aux loss (torchvision's reference recipe); eval returns logits. transform_input is off: the model
    normalises to (x - 0.5) / 0.5 itself, which is what those weights expect. 1-channel first conv (ImageNet RGB
    weights summed). Default input 299 x 299; needs >= 75 x 75, so the paper's 48 x 48 images must be
    upsampled. The aux head pools adaptively below 299 px (torchvision's crashes there in train mode).""")
def cls_inception_v3(pretrained: str = "none", num_classes: int = len(FINDINGS),
                     downsample: str = "bilinear", implant_pool: str = "avg") -> nn.Module:
    blocks = [tvm.inception.BasicConv2d, tvm.inception.InceptionA, tvm.inception.InceptionB,
              tvm.inception.InceptionC, tvm.inception.InceptionD, tvm.inception.InceptionE, _InceptionAuxAnySize]
    return _build("cls_inception_v3", "inception_v3", pretrained, "Conv2d_1a_3x3.conv",
                  {"fc": _linear(num_classes), "AuxLogits.fc": _linear(num_classes)},
                  INCEPTION_MEAN_1CH, INCEPTION_STD_1CH, num_classes, downsample=downsample,
                  implant_pool=implant_pool, aux_logits=True,
                  transform_input=False, init_weights=True, inception_blocks=blocks)
