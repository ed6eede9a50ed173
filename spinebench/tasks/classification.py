"""The paper's transfer-learning classifiers: two sigmoid outputs per image, weighted binary cross-entropy."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spinebench import LABEL_MAP
from spinebench.data.transforms import SPINE_SHAPE_LEN, ClassifierTransform
from spinebench.engine.device import autocast, channels_last
from spinebench.errors import SpinebenchError
from spinebench.tasks.image_level import ImageLevelTask

log = logging.getLogger(__name__)


#: the paper's classifier input (48 x 48)
PAPER_IMAGE_SIZE = 48


def mean_of_looks(film_logits: torch.Tensor, logits_of: Callable[[torch.Tensor], torch.Tensor],
                  x: torch.Tensor) -> torch.Tensor:
    """A classifier's logits for inputs ``x``: the mean of those of the film (``film_logits``) and of its mirror
    image (``logits_of(x.flip(-1))``), in fp32. Every classifier prediction (validation, test, ``evaluate``, the
    demo) takes both looks, so the thresholds chosen on validation are those of the decisions shown.

    Why: training flips films at random (``ClassifierTransform``: a mirrored spine keeps both findings), so the
    mirror image is a film the model has learnt to read, and its errors on the two looks partly cancel (the Cobb
    model's looks, ``tasks.cobb.LOOKS``, do the same for landmarks). Measured on the four quick classifiers of two
    runs on a 2-core EPYC (fp32), one look against two, eight pairs: scoliosis AUROC on 600 unseen synthetic films
    +0.020 on average (higher in 7 of 8: ResNet-50 0.848 -> 0.857, Inception-v3 0.807 -> 0.854, DenseNet-121
    0.769 -> 0.822, ...), implant AUROC there -0.001 (-0.010 to +0.004), implant AUROC on the 626 real hybrid films
    +0.008 (higher in 8 of 8, +0.001 to +0.015). Six looks (zoom 0.92 / 1 / 1.08, each mirrored; one run)
    read the curve a little better still (scoliosis +0.010 over two looks) but the small implants worse (-0.003)
    at three times the cost. A look costs ResNet-50 ~27 ms a film on two cores.
    """
    return (film_logits.float() + logits_of(x.flip(-1)).float()) / 2


def pos_weight(ds) -> torch.Tensor:
    """Class-imbalance weights for the two findings: negatives / positives, clipped to [0.25, 10]."""
    y = np.array([[r["implant"], r["scoliosis"]] for r in ds.records], dtype=np.float64)
    pos = y.sum(0)
    neg = len(y) - pos
    return torch.tensor(np.clip(neg / np.maximum(pos, 1), 0.25, 10.0), dtype=torch.float32)


def spine_shape_scale(ds, size: tuple[int, int], n: int = 256) -> torch.Tensor | None:
    """(34,) standard deviations of the spine-shape targets (one for the centres, one for the tilts) over up to
    ``n`` unaugmented training images; None when none has landmarks."""
    view = ds.with_transform(ClassifierTransform(size, train=False, shape_targets=True))
    t = torch.stack([view[i]["shape"] for i in range(0, len(ds), max(1, len(ds) // n))])
    t = t[torch.isfinite(t).all(1)]
    if len(t) < 2:
        return None
    half = SPINE_SHAPE_LEN // 2
    return torch.cat([t[:, :half].std().repeat(half), t[:, half:].std().repeat(half)]).clamp_min(1e-6)


class _FeatureHead(nn.Module):
    """A train-time head on a classifier's features from the model's own forward pass (a forward hook keeps them:
    no second pass). ``close()`` removes the hook, so the model keeps its registered outputs and state-dict keys.

    ``spatial``: the map before pooling (Grad-CAM's layer, :func:`spinebench.gradcam.target_layer`); else the
    pooled features the classifier layer reads."""

    def __init__(self, model: nn.Module, spatial: bool):
        super().__init__()
        self.spatial, self.rectify = spatial, False
        if spatial:
            from spinebench.gradcam import target_layer

            layer, self.rectify = target_layer(model)
        else:
            layer = model.get_submodule(model.default_cfg["classifier"][0])
        self.layer = [layer]  # in a list: not a submodule of the head (its weights are the model's)
        self._features: torch.Tensor | None = None
        self._hook = self.layer[0].register_forward_hook(self._keep)

    def map_shape(self, model: nn.Module, size) -> tuple[int, int, int]:
        """(C, H, W) of the hooked layer's output for one ``size`` input: one eval-mode forward, the mode restored."""
        seen = {}
        hook = self.layer[0].register_forward_hook(lambda m, i, out: seen.__setitem__("shape", tuple(out.shape[1:])))
        was_training = model.training
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, 1, *size, device=next(model.parameters()).device))
        finally:
            hook.remove()
            model.train(was_training)
        return seen["shape"]

    def _keep(self, module, inputs, output) -> None:
        if module.training:
            if self.spatial:
                self._features = F.relu(output) if self.rectify else output
            else:  # a classifier layer that pools per class reads the map: hand over its average-pooled input
                pooled = getattr(module, "pooled_input", None)
                self._features = pooled(inputs[0]) if pooled else inputs[0]

    def features(self) -> torch.Tensor:
        """The last training forward's features (fp32), handed over once."""
        x, self._features = self._features, None
        if x is None:
            raise RuntimeError(f"{type(self).__name__}.loss called before a training forward pass of the model")
        return x.float()

    def close(self) -> None:
        self._hook.remove()
        self._features = None


class SpineShapeHead(_FeatureHead):
    """Train-time only: a head on the classifier's features that regresses the spine's shape
    (:func:`spinebench.data.transforms.spine_shape`, divided by ``scale``) from the same forward pass.

    Why: one scoliosis bit per film is a thin signal; the 34 numbers of where and how far each vertebra sits and
    tilts give the backbone a dense one. ResNet-50 from random init, quick recipe, weight 1, validation scoliosis
    AUROC (5 seeds, ``benchmarks/bench_aux_target.py``): 0.960 vs 0.884 after 360 steps, 0.916 vs 0.885 after 240,
    none before (0.81 vs 0.85 after 120, while the head still predicts the mean).

    ``spatial=False``: a linear layer on the pooled features (the classifier layer's input). ``spatial=True``: the
    map before pooling through the Cobb regressor's head (1x1 conv to 32 + BN + ReLU, flattened, MLP 256, last
    layer zero; ``models.cobb_regress``): pooling discards where the spine is. SqueezeNet learns the shape only so:
    validation scoliosis AUROC 0.998 / 0.990 after 720 steps against 0.59 / 0.61 without the loss and 0.75 / 0.61
    with the pooled head (2 seeds, 128 x 56). The spatial head needs ``input_size`` (H, W): its flattened width
    follows the map's.
    """

    target = "shape"  # the batch key of its targets

    def __init__(self, model: nn.Module, scale: torch.Tensor, seed: int = 0, spatial: bool = False,
                 input_size: tuple[int, int] | None = None):
        super().__init__(model, spatial)
        if spatial:
            c, h, w = self.map_shape(model, input_size or tuple(model.default_cfg["input_size"]))
            from spinebench.models.cobb_regress import flat_regression_head

            with torch.random.fork_rng(devices=[]):  # its own draws: the run's RNG stays as without it
                torch.manual_seed(seed)
                reduce, head = flat_regression_head(c, (h, w), SPINE_SHAPE_LEN)  # starts at the mean shape
            self.head = nn.Sequential(reduce, nn.Flatten(), head)
        else:
            layer = self.layer[0]
            width = layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels  # SqueezeNet: 1x1 conv
            self.head = nn.Linear(width, SPINE_SHAPE_LEN)
            g = torch.Generator().manual_seed(seed)  # its own draws: the model's init and the run's RNG stay
            with torch.no_grad():
                self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=g) * 0.1 / math.sqrt(width))
                self.head.bias.zero_()
        self.register_buffer("scale", scale.float())

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        """Mean squared error of the last training forward's features against ``targets`` (B, 34); images
        without landmarks (NaN) are left out."""
        x = self.features()
        pred = self.head(x) if self.spatial else self.head(x.mean((2, 3)) if x.dim() == 4 else x)
        y = targets.to(pred.device) / self.scale
        known = torch.isfinite(y).all(1)
        if not known.any():
            return pred.sum() * 0.0
        return F.mse_loss(pred[known], y[known])


class ImplantMapHead(_FeatureHead):
    """Train-time only: where the hardware is, one logit per cell of the classifier's map before pooling
    (Grad-CAM's layer), against "this cell holds part of an implant box"
    (:func:`spinebench.data.transforms.implant_mask`, max-pooled to the map), binary cross-entropy.

    Why: a quick classifier's missed implants are the small ones: on 600 unseen films, SqueezeNet's implant AUROC
    was 0.66 for the 43 films whose hardware is under a tenth of the film's height and 0.98-1.00 for the rest.
    The boxes the detectors train on say where to look; a 1x1 conv (starting at zero weight, a 5% prior) reads
    the same map the classifier pools, so the map learns to light up on hardware. Quick profile, weight 1, the
    unseen films, 2 seeds: implant AUROC SqueezeNet 0.928 / 0.956 against 0.908 / 0.913, DenseNet-121 0.941 /
    0.941 against 0.930 / 0.914; not ResNet-50 or Inception-v3 (no gain; README). A stride-8/16 map instead
    (ResNet layer3, DenseNet block 3, SqueezeNet fire 7, Inception Mixed_6e) did no better.
    """

    target = "implant_map"

    def __init__(self, model: nn.Module, input_size: tuple[int, int] | None = None, prior: float = 0.05):
        super().__init__(model, spatial=True)
        c, _, _ = self.map_shape(model, input_size or tuple(model.default_cfg["input_size"]))
        with torch.random.fork_rng(devices=[]):  # the conv's default init draws: the run's RNG stays as without it
            self.head = nn.Conv2d(c, 1, 1)
        with torch.no_grad():  # a fixed start (zero weight, the prior's bias), whatever the seed
            self.head.weight.zero_()
            self.head.bias.fill_(math.log(prior / (1 - prior)))

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy of the cells' logits against the (B, H, W) input-size masks, max-pooled to the
        map; films whose boxes are unknown (NaN) are left out."""
        logits = self.head(self.features())[:, 0]
        masks = targets.to(logits.device).float()
        known = torch.isfinite(masks).flatten(1).all(1)
        if not known.any():
            return logits.sum() * 0.0
        y = (F.adaptive_max_pool2d(masks[known][:, None], logits.shape[-2:])[:, 0] >= 0.5).float()
        return F.binary_cross_entropy_with_logits(logits[known], y)


class AuxHeads(nn.ModuleDict):
    """The train-time heads beside a classifier (``TrainData.aux``), each with its loss weight: the loss adds
    ``weight x head.loss(batch[head.target])`` per head and logs each term under the head's key."""

    def __init__(self, heads: dict[str, tuple[nn.Module, float]]):
        super().__init__({k: h for k, (h, _) in heads.items()})
        self.weights = {k: float(w) for k, (_, w) in heads.items()}

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        total, logs = 0.0, {}
        for key, head in self.items():
            term = head.loss(torch.stack(batch[head.target]))
            total = total + self.weights[key] * term
            logs[key] = float(term.detach())
        return total, logs

    def close(self) -> None:
        for head in self.values():
            head.close()


class ClassificationTask(ImageLevelTask):
    name = "classification"

    def settings(self, profile, name: str, n_train: int, image_size: int | None = None):
        size = profile.classifier_sizes.get(name)
        if image_size:
            # the paper's 48 x 48 is below Inception-v3's minimum (75): a model that cannot take the paper's size
            # gets its minimum instead; other sizes below a model's minimum are refused (runner._check_schedule)
            from spinebench.models import model_info
            from spinebench.models.classifiers import fit_min_input

            need = model_info(name).get("min_input_size") or (0, 0)
            bump = min(need) > PAPER_IMAGE_SIZE
            size = fit_min_input((image_size, image_size), need) if bump else (image_size, image_size)
        return replace(profile.classifier, image_size=size) if size else profile.classifier

    def model_kwargs(self, profile, settings) -> dict:
        # how films shrink to the input and how the implant map is pooled are part of the model (its default_cfg),
        # so they travel with the weights
        return {k: settings.extra[k] for k in ("downsample", "implant_pool") if settings.extra.get(k)}

    def transform(self, model, image_size, train: bool, shape_targets: bool = False, implant_map: bool = False):
        size = tuple(image_size) if image_size else tuple(model.default_cfg["input_size"])
        return ClassifierTransform(size, train=train, shape_targets=shape_targets, implant_map=implant_map,
                                   downsample=model.default_cfg.get("downsample", "bilinear"))

    def train_data(self, model, ds, settings, device, seed, rank=0, world=1, transform=None):
        name, size = model.default_cfg["name"], tuple(settings.image_size or model.default_cfg["input_size"])
        if settings.aux_shape_head not in ("pooled", "spatial"):
            raise SpinebenchError(f"aux_shape_head must be 'pooled' or 'spatial' (got {settings.aux_shape_head!r})")
        scale, implant = None, settings.aux_implant_weight > 0
        if settings.aux_shape_weight > 0:
            scale = spine_shape_scale(ds, size)
            if scale is None:
                log.info("%s: no training image has landmarks; trained without the spine-shape loss", name)
        if implant and not any(int(b[4]) == LABEL_MAP["Lum"] for r in ds.records for b in r.get("boxes") or []):
            log.info("%s: no training image has implant boxes; trained without the implant-map loss", name)
            implant = False
        if world > 1 and (scale is not None or implant):  # the heads sit outside DDP: their gradients would differ
            log.warning("%s: the train-time spine-shape and implant-map losses are not used under DDP", name)
            scale, implant = None, False
        if scale is not None or implant:
            transform = self.transform(model, settings.image_size, train=True, shape_targets=scale is not None,
                                       implant_map=implant)
        data = super().train_data(model, ds, settings, device, seed, rank, world, transform)
        heads = {}
        if scale is not None:
            spatial = settings.aux_shape_head == "spatial"
            heads["shape"] = (SpineShapeHead(model, scale, seed, spatial=spatial, input_size=size),
                              settings.aux_shape_weight)
        if implant:
            heads["implant"] = (ImplantMapHead(model, input_size=size), settings.aux_implant_weight)
        if heads:
            data.aux = AuxHeads(heads).to(device)
        data.pos_weight = pos_weight(ds).to(device)
        return data

    def loss(self, net, batch, data, device, settings):
        x = batch["image"].to(device, non_blocking=True)
        if channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        y = batch["labels"].to(device)
        with autocast(device):
            out = net(x)
        pw = data.pos_weight
        if isinstance(out, (tuple, list)):  # inception_v3 in train mode: (logits, aux_logits)
            loss = F.binary_cross_entropy_with_logits(out[0].float(), y, pos_weight=pw) + \
                settings.aux_weight * F.binary_cross_entropy_with_logits(out[1].float(), y, pos_weight=pw)
        else:
            loss = F.binary_cross_entropy_with_logits(out.float(), y, pos_weight=pw)
        if isinstance(data.aux, AuxHeads):
            extra, logs = data.aux.loss(batch)
            return loss + extra, logs
        return loss, {}

    def _infer(self, model, batch, device):
        x = batch["image"].to(device)
        if channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        return torch.sigmoid(mean_of_looks(model(x), model, x)).cpu().numpy(), None

    def prepare_inference(self, lm, example, device, optimize):
        from spinebench.gradcam import GradCAM

        x = lm.record.model_input(example)[None].to(device)
        lm.cam = GradCAM(lm.model, optimize=optimize and device.type == "cpu", example=x)

    def infer(self, lm, view, scale, device, heatmaps):
        """Probabilities (the film and its mirror image: :func:`mean_of_looks`), decisions at the validated
        thresholds, and Grad-CAM of both findings on the film."""
        from spinebench.predict.predictor import decide

        inp = lm.record.model_input(view)[None].to(device)
        logits, cams = lm.cam(inp, cams=heatmaps)
        logits = mean_of_looks(logits, lambda m: lm.cam(m, cams=False)[0], inp)
        probs = torch.sigmoid(logits)[0].cpu().numpy()  # the one sigmoid, here
        out = dict(input_size=[int(s) for s in inp.shape[-2:]], **decide(probs, lm.thresholds))
        return out, {"cams": cams[0].cpu().numpy() if cams is not None else None}

    def draw(self, view, result, extra):
        from spinebench.predict.drawing import cam_panel

        return cam_panel(view, extra.get("cams"), result)
