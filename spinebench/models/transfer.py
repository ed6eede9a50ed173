"""In-domain transfer: start a detector's backbone from a classifier trained on the same training split.

Why: the paper fine-tuned detectors whose backbones had seen millions of images (COCO / Open Images). Where no
such weights are at hand (offline machines, ``pretrained="none"``), the next best start is the one the paper's
own classifiers give: a network of the same family that has already learnt what implants and spines look like
on these radiographs. From random init the two Faster R-CNNs learn nothing within a CPU budget (quick profile:
validation ``Lum`` AP@0.5 0.03 / 0.00); the classification task is much cheaper per image (one label instead of
anchors, proposals and RoIs), so a few hundred classifier images buy the features that the detector's few dozen
steps then only have to localise.

- ``det_faster_rcnn_inception_v2``: its body is timm's ``inception_v3``, whose module names are torchvision's
  Inception3 names (``Conv2d_1a_3x3``, ``Mixed_5b``...), so the trained ``cls_inception_v3`` maps onto it key by
  key (:func:`init_backbone_from_classifier`). The detector made VALID paddings SAME
  (:func:`spinebench.models.detectors.align_feature_maps`): same weights, features shifted by at most one
  border pixel, which is what the TF OD API does with ImageNet weights too.
- ``det_faster_rcnn_inception_resnet_v2``: no registered classifier shares its body, so
  :func:`body_classifier` wraps timm's ``inception_resnet_v2`` as a finding classifier behind the pixel contract
  so it can be pre-trained on the training split by the same training loop (48 steps of the quick classifier
  settings, ~75 s on 2 CPU cores), then transferred and frozen: its detector steps cost half as much (no
  backward through the 54 M-parameter body). Only Inception-v3's stem fits this body (:data:`INCEPTION_V3_STEM_TO_IRV2`):
  alone, in place of the pre-training, it measured little; as the start of the pre-training (``start_from``), the
  body classifier begins with the trained ``cls_inception_v3``'s stem instead of a random one, and its few dozen
  steps go to the layers above it.

:data:`IN_DOMAIN` holds each detector's plan and :func:`init_in_domain` applies it. The classifier must be trained
on THIS run's training split (the same split file): one trained on another split has seen validation or test
images, and the detector would inherit them.

Provenance: the caller records where the body came from (``pretrained="in-domain:cls_inception_v3"``); the
function writes it to ``detector.default_cfg["backbone_init"]``. ``pretrained_loaded`` keeps its meaning
(ImageNet weights arrived) and is not touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn

from spinebench import FINDINGS
from spinebench.errors import SpinebenchError

log = logging.getLogger(__name__)

#: Prefixes a classifier's state dict may carry in front of the backbone's own names: FindingClassifier's
#: ``net.`` and DistributedDataParallel's ``module.``.
_PREFIXES = ("module.", "net.")

#: Inception-v3's stem (Conv2d_1a_3x3 ... Conv2d_4a_3x3, 32-32-64-80-192 channels) is Inception-ResNet-v2's stem
#: layer for layer, same shapes: ``cls_inception_v3`` can start ``det_faster_rcnn_inception_resnet_v2``'s stem.
INCEPTION_V3_STEM_TO_IRV2 = {"Conv2d_1a_3x3": "conv2d_1a", "Conv2d_2a_3x3": "conv2d_2a", "Conv2d_2b_3x3": "conv2d_2b",
                             "Conv2d_3b_1x1": "conv2d_3b", "Conv2d_4a_3x3": "conv2d_4a"}


@dataclass(frozen=True)
class InDomainPlan:
    """How a detector starts from a classifier trained on the training split (see the module docstring).

    ``classifier``: a registered classifier that run-all trains anyway (``cls_inception_v3``), or ``body:<arch>``:
    the detector's own timm body as a classifier (:func:`body_classifier`), trained for ``pretrain_epochs`` of the
    profile's classifier settings before the detector. ``model_kwargs``: what the detector must be built with
    for this start (a frozen body needs ``fpn_norm="gn"``). ``start_from`` (``body:<arch>`` only): a registered
    classifier trained earlier in the run whose first stages, renamed by ``start_rename``, start that body
    classifier before its pre-training (:func:`start_body_classifier`).
    """

    classifier: str
    rename: Mapping[str, str] | None = None  # the classifier's module names -> the body's (partial transfers)
    trainable_from: str | None = None        # first body stage that trains (earlier ones frozen)
    freeze_body: bool = False
    pretrain_epochs: int | None = None       # body:<arch> only; None: the profile's classifier epochs
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    start_from: str | None = None
    start_rename: Mapping[str, str] | None = None

    @property
    def pretrained(self) -> str:
        """The provenance string a result row records, e.g. ``"in-domain:cls_inception_v3"``, or
        ``"in-domain:body:inception_resnet_v2+cls_inception_v3:stem"`` for a body pre-trained from that stem."""
        return (f"in-domain:{self.classifier}" + (":stem" if self.rename else "")
                + (f"+{self.start_from}:stem" if self.start_from else ""))

    @property
    def needs(self) -> str | None:
        """The registered classifier this start needs trained earlier in the same run (None: none)."""
        return self.start_from if self.classifier.startswith("body:") else self.classifier

    def make_classifier(self) -> nn.Module:
        """A fresh classifier to pre-train (``create_model`` for a registered one)."""
        if self.classifier.startswith("body:"):
            return body_classifier(self.classifier.partition(":")[2])
        from spinebench.models import create_model

        return create_model(self.classifier, pretrained="none")


#: Each detector's in-domain start, measured with benchmarks/bench_detector_recipe.py on validation (one seed, quick
#: profile). Inception-v2: Lum AP@0.5 0.25-0.33, implant AUROC 0.87-0.93 (random init 0.03 / 0.69).
#: Inception-ResNet-v2: its own body, 48 classifier steps (~75 s, validation implant AUROC 0.99), then frozen:
#: ~1 s per detector step instead of 2.2; after 60 steps 0.21 / 0.90 (random init, 96 steps: 0.03 / 0.79; the
#: Inception-v3 stem alone, 96 steps: 0.12 / 0.77). In fp32 (a 2-core AVX2 EPYC) the quick profile's 35 s of
#: pre-training are ~24 steps, and the body stays near its random init; started from the run's cls_inception_v3
#: stem, the same 35 s + 50 s gave on 600 unseen films implant AUROC 0.863 / 0.863 / 0.855 against 0.754 / 0.716 /
#: 0.614 and Lum AP@0.5 0.268 / 0.216 / 0.181 against 0.066 / 0.026 / 0.014 (3 paired seeds; docs/results.md,
#: session 39).
IN_DOMAIN: dict[str, InDomainPlan] = {
    "det_faster_rcnn_inception_v2": InDomainPlan("cls_inception_v3", trainable_from="Mixed_6a"),
    "det_faster_rcnn_inception_resnet_v2": InDomainPlan("body:inception_resnet_v2", freeze_body=True,
                                                        pretrain_epochs=4, model_kwargs={"fpn_norm": "gn"},
                                                        start_from="cls_inception_v3",
                                                        start_rename=INCEPTION_V3_STEM_TO_IRV2),
}


@dataclass
class TransferReport:
    """What a transfer did: body keys loaded, body keys left at their init, classifier keys of other shapes,
    classifier keys the body has no place for (heads, auxiliary classifier)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)


def _strip(key: str, rename: Mapping[str, str] | None = None) -> str:
    for p in _PREFIXES:
        if key.startswith(p):
            key = key[len(p):]
    if rename:
        head, dot, rest = key.partition(".")
        key = rename.get(head, head) + dot + rest
    return key


def load_body_state(body: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "classifier",
                    require: str | None = None, rename: Mapping[str, str] | None = None) -> TransferReport:
    """Copy the entries of ``state_dict`` whose name (without ``net.`` / ``module.``, top-level module renamed
    by ``rename``) and shape match a key of ``body`` into it; leave the rest of ``body`` as it is.

    Raises SpinebenchError when nothing matches (the wrong model, or a file that is not a state dict), or when
    ``require`` is given and a body key starting with it was not loaded (a partly matching architecture).
    """
    own = body.state_dict()
    theirs = {_strip(k, rename): v for k, v in state_dict.items()}
    rep = TransferReport()
    new = {}
    for k, v in theirs.items():
        if k not in own:
            rep.unused.append(k)
        elif tuple(own[k].shape) != tuple(v.shape):
            rep.mismatched.append(f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}")
        else:
            new[k] = v.detach().to(own[k].dtype)
    rep.loaded = sorted(new)
    rep.missing = sorted(k for k in own if k not in new)
    if not new:
        hint = f"; shapes differ for {rep.mismatched[:3]}" if rep.mismatched else ""
        raise SpinebenchError(f"{source}: none of its {len(theirs)} weights fits the detector body "
                              f"({len(own)} keys, e.g. {next(iter(own), '')!r}){hint}")
    if require is not None:
        missed = [k for k in rep.missing if k.startswith(require)]
        if missed:
            raise SpinebenchError(f"{source}: {len(missed)} body weights under {require!r} have no match "
                                  f"(e.g. {missed[0]!r})")
    body.load_state_dict(new, strict=False)
    return rep


def init_backbone_from_classifier(detector: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                                  source: str = "in-domain", freeze_bn: bool = True,
                                  trainable_from: str | None = None, freeze_body: bool = False,
                                  rename: Mapping[str, str] | None = None) -> TransferReport:
    """Initialise ``detector.backbone.body`` from a trained classifier's ``state_dict``, in place.

    Why: a detector trained from random init learns nothing within a CPU budget; a classifier of the same
    family trained on the same training split (``cls_inception_v3`` for ``det_faster_rcnn_inception_v2``, or
    :func:`body_classifier` for any timm body) already knows implants, and its weights fit the body name for
    name. The FPN and the heads stay at their init. Only weights of the TRAINING split may be used here: a
    classifier trained on validation or test images would leak them into the detector's scores.

    ``freeze_bn``: BatchNorm statistics and affine parameters of the body's transferred stages become constants
    (``timm.layers.freeze_batch_norm_2d``), torchvision's rule for pretrained detection backbones: detection
    batches of 1-4 images would otherwise overwrite statistics learnt from batches of 16. Stages left partly at
    their init (a partial transfer, ``rename``) keep training theirs: a frozen BatchNorm that never saw data
    would normalise nothing.
    ``rename``: top-level module names of the classifier -> the body's, for bodies of another family that share
    some stages (:data:`INCEPTION_V3_STEM_TO_IRV2`).
    ``trainable_from``: the body's children before this one (e.g. ``"Mixed_6a"``) are frozen, torchvision's
    ``trainable_backbone_layers``; None trains the whole body. ``freeze_body``: no body weight trains (only the
    FPN and the heads): the cheapest step (no backward through the body). Build such a detector with
    ``fpn_norm="gn"``: a classifier's last maps are ~10x larger than at init (Mixed_7c std ~7 after the quick
    classifier run), and a plain FPN passes that on to untrained heads (first losses ~50 instead of ~2).
    ``source`` is recorded as ``detector.default_cfg["backbone_init"]`` (e.g. ``"in-domain:cls_inception_v3"``).

    Returns the :class:`TransferReport`; raises SpinebenchError when no weight fits or the stem did not load.
    """
    body = detector.backbone.body
    first = next(iter(body.state_dict()))
    rep = load_body_state(body, state_dict, source=source, require=first.split(".")[0], rename=rename)
    if freeze_bn:
        from timm.layers import freeze_batch_norm_2d

        if not rep.missing:
            detector.backbone.body = body = freeze_batch_norm_2d(body)
        else:
            partial = {k.split(".")[0] for k in rep.missing}
            for n, child in list(body.named_children()):
                if n not in partial:
                    setattr(body, n, freeze_batch_norm_2d(child))
    if freeze_body:
        body.requires_grad_(False)
    elif trainable_from is not None:
        names = [n for n, _ in body.named_children()]
        if trainable_from not in names:
            raise SpinebenchError(f"no stage {trainable_from!r} in the body; stages: {', '.join(names)}")
        for n, child in body.named_children():
            if n == trainable_from:
                break
            child.requires_grad_(False)
    cfg = getattr(detector, "default_cfg", None)
    if isinstance(cfg, dict):
        cfg["backbone_init"] = source
        cfg["backbone_bn"] = "frozen" if freeze_bn else "trained"
        cfg["backbone_trainable_from"] = "frozen" if freeze_body else trainable_from
    log.info("%s: %d body weights from %s, %d left at init, %d of other shapes", cfg.get("name", "detector")
             if isinstance(cfg, dict) else "detector", len(rep.loaded), source, len(rep.missing), len(rep.mismatched))
    return rep


def body_classifier(arch: str, name: str | None = None, num_classes: int = len(FINDINGS)) -> nn.Module:
    """timm ``arch`` (1 input channel, ``num_classes`` logits) as a finding classifier for the training loop.

    For detector bodies that no registered classifier shares (``inception_resnet_v2``): pre-train it briefly on
    the training split, then :func:`init_backbone_from_classifier` maps its state dict (``net.<timm name>``)
    onto the detector's ``features_only`` body. Pixel contract and normalisation as the detectors: (x - 0.5) / 0.5.
    """
    import timm

    from spinebench.models.classifiers import FindingClassifier

    name = name or f"body_{arch}"
    net = timm.create_model(arch, pretrained=False, in_chans=1, num_classes=num_classes)
    model = FindingClassifier(net, (0.5,), (0.5,), (75, 75), name)
    model.pretrained_loaded = False
    model.default_cfg = dict(name=name, task="classification", architecture=f"timm.{arch}", input_size=(299, 299),
                             min_input_size=(75, 75), in_chans=1, num_classes=num_classes, outputs="logits",
                             findings=FINDINGS, mean=(0.5,), std=(0.5,), weights=None,
                             classifier=["net." + net.default_cfg.get("classifier", "fc")])
    return model


def start_body_classifier(body_cls: nn.Module, plan: InDomainPlan,
                          state: Mapping[str, torch.Tensor]) -> TransferReport:
    """Start a ``body:<arch>`` plan's classifier (:meth:`InDomainPlan.make_classifier`) from ``state``, the
    trained weights of ``plan.start_from``, in place: the stages ``plan.start_rename`` maps (all of them, or
    SpinebenchError), the rest left at their init. Nothing is frozen: the pre-training goes on from there."""
    if not plan.start_from or not plan.start_rename:
        raise SpinebenchError(f"the plan for {plan.classifier} has no start_from / start_rename")
    rep = load_body_state(body_cls.net, state, source=plan.start_from, rename=plan.start_rename)
    missed = set(plan.start_rename.values()) - {k.split(".")[0] for k in rep.loaded}
    if missed:
        raise SpinebenchError(f"{plan.start_from}: no weights for {', '.join(sorted(missed))} of the body")
    return rep


def init_in_domain(detector: nn.Module, classifier_state: Mapping[str, torch.Tensor],
                   name: str | None = None, source: str | None = None) -> tuple[TransferReport, str]:
    """Start ``detector`` from ``classifier_state`` as :data:`IN_DOMAIN` plans it for the detector's name.

    ``source`` replaces the plan's provenance string where the start differed from the plan (a body pre-trained
    without its ``start_from``, which this run did not train). Returns (report, the ``pretrained`` string to
    record). Raises SpinebenchError for a detector without a plan.
    """
    name = name or detector.default_cfg["name"]
    if name not in IN_DOMAIN:
        raise SpinebenchError(f"no in-domain transfer for {name}; planned for: {', '.join(IN_DOMAIN)}")
    plan = IN_DOMAIN[name]
    wrong = {k: v for k, v in plan.model_kwargs.items() if detector.default_cfg.get(k) != v}
    if wrong:
        raise SpinebenchError(f"{name}'s in-domain start needs the detector built with {dict(plan.model_kwargs)} "
                              f"(create_model(..., **IN_DOMAIN[name].model_kwargs)); it has "
                              f"{ {k: detector.default_cfg.get(k) for k in wrong} }")
    source = source or plan.pretrained
    rep = init_backbone_from_classifier(detector, classifier_state, source=source, rename=plan.rename,
                                        trainable_from=plan.trainable_from, freeze_body=plan.freeze_body)
    return rep, source
