"""Grad-CAM for the four classifiers, computed from the same forward pass that gives the probabilities.

Why not a generic Grad-CAM library: those record the autograd graph of the whole network and back-propagate
through all of it, once per class. Grad-CAM only needs d(logit)/d(A) for the activation ``A`` of the last
convolutional block, and that gradient depends only on what comes *after* ``A`` (pooling and the head). So the
backbone runs without autograd (parameters frozen), a forward hook cuts the graph at ``A`` and makes it the only
leaf that requires grad, and one batched ``autograd.grad`` over the head gives both findings' gradients. The
probabilities are those of a plain eval forward (same weights, same ops); the heatmaps cost about as much as the
head. Selvaraju et al., "Grad-CAM", ICCV 2017.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

#: Last convolutional block of each classifier architecture (``model.default_cfg["architecture"]``), and whether
#: the network applies a functional ReLU right after it (DenseNet: ``F.relu(features)``). Grad-CAM weighs the
#: rectified activations; applying that ReLU in the hook as well changes nothing downstream (ReLU is idempotent).
TARGET_LAYERS = {
    "torchvision.models.resnet50": ("net.layer4", False),
    "torchvision.models.densenet121": ("net.features", True),
    "torchvision.models.squeezenet1_1": ("net.features", False),
    "torchvision.models.inception_v3": ("net.Mixed_7c", False),
}


def target_layer(model: nn.Module) -> tuple[nn.Module, bool]:
    """(module whose output Grad-CAM weighs, rectify it): the known layer, else the last Conv2d."""
    known = TARGET_LAYERS.get(getattr(model, "default_cfg", {}).get("architecture", ""))
    if known:
        return model.get_submodule(known[0]), known[1]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer for Grad-CAM")
    return convs[-1], False


class GradCAM:
    """``GradCAM(model)(x) -> (logits (B, K), cams (B, K, h, w) in [0, 1])`` for a logits classifier in eval mode.

    ``cams[b, k]`` is Grad-CAM of logit ``k`` at the target layer's resolution (upsample for display with
    :func:`upsample`). The model's parameters are set to not require grad (inference only).
    """

    def __init__(self, model: nn.Module, layer: nn.Module | None = None, rectify: bool = False):
        self.model = model.eval().requires_grad_(False)
        self.layer, self.rectify = (layer, rectify) if layer is not None else target_layer(model)
        self._act: torch.Tensor | None = None
        self._handle = self.layer.register_forward_hook(self._hook)
        self.enabled = False

    def _hook(self, module, inputs, output):
        if not self.enabled:
            return None
        # cut the graph here: everything before A is constant, everything after is recorded
        act = (F.relu(output) if self.rectify else output).detach().requires_grad_(True)
        self._act = act
        return act.clone()  # a non-leaf: heads may apply in-place ops (DenseNet's relu_)

    def remove(self) -> None:
        self._handle.remove()

    def __call__(self, x: torch.Tensor, cams: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
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
                k = logits.shape[1]
                # one backward per output, batched (vmap) through the head only
                grad_out = torch.eye(k, dtype=logits.dtype).unsqueeze(1).expand(k, *logits.shape)
                (grads,) = torch.autograd.grad(logits, act, grad_outputs=grad_out, is_grads_batched=True)
        finally:
            self.enabled, self._act = False, None
        act = act.detach()
        weights = grads.mean(dim=(-2, -1))                           # (K, B, C): alpha_k^c
        cam = torch.einsum("kbc,bchw->bkhw", weights, act).clamp_(min=0)
        peak = cam.amax(dim=(-2, -1), keepdim=True)
        cam = torch.where(peak > 0, cam / peak.clamp(min=1e-12), cam)
        return logits.detach(), cam


def upsample(cam: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One (h, w) heatmap to ``size`` (H, W), bilinear, values kept in [0, 1]."""
    t = torch.as_tensor(np.asarray(cam, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
    return out[0, 0].clamp_(0, 1).numpy()
