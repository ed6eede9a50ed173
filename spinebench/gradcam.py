"""Grad-CAM for the four classifiers, computed from the same forward pass that gives the probabilities.

Why not a generic Grad-CAM library: those record the autograd graph of the whole network and back-propagate
through all of it, once per class. Grad-CAM only needs d(logit)/d(A) for the activation ``A`` of the last
convolutional block, and that gradient depends only on what comes *after* ``A`` (pooling and the head). So the
backbone runs without autograd, ``A`` becomes the only leaf that requires grad, the head runs on it with autograd,
and one batched ``autograd.grad`` over the head gives both findings' gradients. The logits are those of the plain
eval forward (same weights, same ops); the heatmaps cost about as much as the head. Selvaraju et al., "Grad-CAM",
ICCV 2017.

Two ways to run the backbone part:

* ``optimize=True`` and a known architecture (:data:`HEADS`): the network up to ``A`` is traced once, frozen and
  optimised for inference (TorchScript: BatchNorm folded into the convolutions, conv + ReLU fused, weights
  pre-packed for oneDNN; about 1.5x faster on a CPU), and the head is the architecture's own modules called on
  ``A``. The frozen graph is checked against the eager model at construction and dropped if it differs.
* otherwise a forward hook on the target layer cuts the graph there (eager, any architecture).
"""

from __future__ import annotations

import logging
import warnings
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spinebench.models.classifiers import densenet_head

log = logging.getLogger(__name__)

#: Last convolutional block of each classifier architecture (``model.default_cfg["architecture"]``), and whether
#: the network applies a functional ReLU right after it (DenseNet: ``F.relu(features)``). Grad-CAM weighs the
#: rectified activations; applying that ReLU to ``A`` as well changes nothing downstream (ReLU is idempotent).
TARGET_LAYERS = {
    "torchvision.models.resnet50": ("net.layer4", False),
    "torchvision.models.densenet121": ("net.features", True),
    "torchvision.models.squeezenet1_1": ("net.features", False),
    "torchvision.models.inception_v3": ("net.Mixed_7c", False),
}

#: What each torchvision classifier computes after its target layer, in eval mode (its ``forward`` from there on;
#: with ``implant_pool="lse"`` the average pooling is the identity and the classifier layer pools per class,
#: ``spinebench.models.classifiers``).
HEADS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "torchvision.models.resnet50": lambda net, a: net.fc(torch.flatten(net.avgpool(a), 1)),
    "torchvision.models.densenet121": lambda net, a: densenet_head(net, a),
    "torchvision.models.squeezenet1_1": lambda net, a: torch.flatten(net.classifier(a), 1),
    "torchvision.models.inception_v3": lambda net, a: net.fc(torch.flatten(net.dropout(net.avgpool(a)), 1)),
}


def target_layer(model: nn.Module) -> tuple[nn.Module, bool]:
    """(module whose output Grad-CAM weighs, rectify it): the known layer, else the last Conv2d."""
    known = TARGET_LAYERS.get(_arch(model))
    if known:
        return model.get_submodule(known[0]), known[1]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    return convs[-1], False


def _arch(model: nn.Module) -> str:
    return str(getattr(model, "default_cfg", {}).get("architecture", ""))


def trace_frozen(module: nn.Module, example, check: Callable | None = None) -> torch.jit.ScriptModule | None:
    """``module`` traced on ``example``, frozen and optimised for inference; None when tracing fails or the result
    differs from eager (``check(frozen_output, eager_output) -> bool``, default: allclose at rtol 1e-4)."""
    module = module.eval()
    args = example if isinstance(example, tuple) else (example,)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about shapes turned into constants
            traced = torch.jit.trace(module, args, check_trace=False, strict=False)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        with torch.inference_mode():
            ok = (check or _allclose)(frozen(*args), module(*args))
    except Exception as e:  # noqa: BLE001 - an optimisation must never stop a model from running
        log.warning("could not optimise %s (%s: %s); it runs eagerly", type(module).__name__, type(e).__name__, e)
        return None
    if not ok:
        log.warning("optimised %s differs from the eager model; it runs eagerly", type(module).__name__)
        return None
    return frozen


def _flat(x) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _flat(v)]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _flat(v)]
    return []


def _allclose(a, b, rtol: float = 1e-4) -> bool:
    fa, fb = _flat(a), _flat(b)
    if len(fa) != len(fb):
        return False
    for x, y in zip(fa, fb):
        if x.shape != y.shape:
            return False
        scale = float(y.abs().max()) if y.numel() else 0.0
        if y.numel() and float((x.float() - y.float()).abs().max()) > rtol * max(scale, 1e-6):
            return False
    return True


class _UpToLayer(nn.Module):
    """The model run to its target layer; returns that layer's output (what comes after is dead code for the
    tracer, removed by freezing)."""

    def __init__(self, model: nn.Module, layer: nn.Module):
        super().__init__()
        self.model = model
        self._out: list[torch.Tensor] = []
        self.handle = layer.register_forward_hook(lambda mod, args, out: self._out.append(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._out.clear()
        self.model(x)
        return self._out[-1]


class GradCAM:
    """``GradCAM(model)(x) -> (logits (B, K), cams (B, K, h, w) in [0, 1] or None)`` for a logits classifier.

    ``cams[b, k]`` is Grad-CAM of logit ``k`` at the target layer's resolution (upsample for display with
    :func:`upsample`). The model is put in eval mode with parameters not requiring grad (inference only).
    ``optimize`` with ``example`` (an input of the size the model will get) freezes the part up to the target
    layer for speed; see the module docstring.
    """

    def __init__(self, model: nn.Module, layer: nn.Module | None = None, rectify: bool = False,
                 optimize: bool = False, example: torch.Tensor | None = None):
        self.model = model.eval().requires_grad_(False)
        self.layer, self.rectify = (layer, rectify) if layer is not None else target_layer(model)
        self._act: torch.Tensor | None = None
        self.enabled = False
        self.body = None
        head = HEADS.get(_arch(model))
        if optimize and head is not None and layer is None and example is not None:
            net = model.net
            self.head = lambda a: head(net, a)
            body = _UpToLayer(model, self.layer)
            self.body = trace_frozen(body, example, check=lambda f, e: _allclose(f, e)
                                     and _allclose(self.head(f), model(example)))
            body.handle.remove()  # the traced graph needs no hook; eager calls must not collect activations
        self._handle = self.layer.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if not self.enabled:
            return None
        # cut the graph here: everything before A is constant, everything after is recorded
        act = (F.relu(output) if self.rectify else output).detach().requires_grad_(True)
        self._act = act
        return act.clone()  # a non-leaf: heads may apply in-place ops (DenseNet's relu_)

    def remove(self) -> None:
        self._handle.remove()

    @property
    def optimized(self) -> bool:
        return self.body is not None

    def __call__(self, x: torch.Tensor, cams: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.body is not None:
            with torch.inference_mode():
                feats = self.body(x)
            if not cams:
                with torch.inference_mode():
                    return self.head(feats), None
            # an inference tensor cannot enter autograd: copy it out once (small: C x h x w)
            act = (F.relu(feats) if self.rectify else feats).clone().requires_grad_(True)
            with torch.enable_grad():
                logits = self.head(act)
                return logits.detach(), self._cams(logits, act)
        if not cams:
            with torch.inference_mode():
                return self.model(x), None
        self.enabled, self._act = True, None
        try:
            with torch.enable_grad():
                logits = self.model(x)
                act = self._act
                if act is None:
                    raise RuntimeError("Grad-CAM target layer was not reached in the forward pass")
                cam = self._cams(logits, act)
        finally:
            self.enabled, self._act = False, None
        return logits.detach(), cam

    @staticmethod
    def _cams(logits: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        k = logits.shape[1]
        # one backward per output, batched (vmap) through the head only
        grad_out = torch.eye(k, dtype=logits.dtype).unsqueeze(1).expand(k, *logits.shape)
        (grads,) = torch.autograd.grad(logits, act, grad_outputs=grad_out, is_grads_batched=True)
        act = act.detach()
        weights = grads.mean(dim=(-2, -1))                           # (K, B, C): alpha_k^c
        cam = torch.einsum("kbc,bchw->bkhw", weights, act).clamp_(min=0)
        peak = cam.amax(dim=(-2, -1), keepdim=True)
        return torch.where(peak > 0, cam / peak.clamp(min=1e-12), cam)


def upsample(cam: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One (h, w) heatmap to ``size`` (H, W), bilinear, values kept in [0, 1]."""
    t = torch.as_tensor(np.asarray(cam, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
    return out[0, 0].clamp_(0, 1).numpy()
