"""ImageNet weights, honestly: loaded only from what is really there, never a silent long network wait.

``pretrained`` is one of:

- ``"none"``: random init.
- ``"imagenet"``: ImageNet weights (torchvision's weights enum for the classifiers, timm's for the detector
  backbones) or a :class:`SpinebenchError` with one clear line.
- ``"auto"``: the same when the weights are at hand, else ONE warning per process per model and random init.

The local cache is looked at first (``torch.hub.get_dir()/checkpoints/<file named by the URL>`` for torchvision
and timm URL weights; the Hugging Face hub cache for timm's HF weights). A download is tried only when the
environment allows it: not when ``SPINEBENCH_OFFLINE`` or ``HF_HUB_OFFLINE`` is set, and only when the host
answers a short connection probe (a machine without internet fails in seconds, not after socket timeouts).
Hashes in checkpoint names are not checked for cached files (torchvision checks them only while downloading).

Whether weights really arrived is recorded on every model as ``model.pretrained_loaded``; results tables and
checkpoints carry it so that a random-init run is never reported as a transfer-learning one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch
from torch import nn

from spinebench.errors import SpinebenchError

_logger = logging.getLogger(__name__)

PRETRAINED_MODES = ("none", "auto", "imagenet")
_PROBE_TIMEOUT_S = 3.0
_HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")
_warned: set[str] = set()


def check_mode(pretrained: str | None) -> str:
    """Normalise the ``pretrained`` argument (``None`` means ``"none"``)."""
    mode = "none" if pretrained is None else str(pretrained).lower()
    if mode not in PRETRAINED_MODES:
        raise SpinebenchError(f"pretrained must be one of {', '.join(PRETRAINED_MODES)}; got {pretrained!r}")
    return mode


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def offline() -> bool:
    """True when the environment forbids downloads (``SPINEBENCH_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``)."""
    return _env_flag("SPINEBENCH_OFFLINE") or _env_flag("HF_HUB_OFFLINE")


@lru_cache(maxsize=None)
def _host_reachable(host: str, port: int = 443) -> bool:
    """A TCP connection to ``host`` within a few seconds, DNS included (run in a thread: getaddrinfo ignores
    socket timeouts). Cached per process so a model zoo run probes each host once."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
            result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(_PROBE_TIMEOUT_S + 0.5)
    return bool(result and result[0])


def _download_blocker(host: str) -> str | None:
    """Why a download from ``host`` will not be tried, or None if it may be."""
    if offline():
        return "downloads are disabled (SPINEBENCH_OFFLINE/HF_HUB_OFFLINE is set)"
    if not _host_reachable(host):
        return f"{host} is not reachable"
    return None


# ---------------------------------------------------------------------------------------------- locations
def torch_hub_checkpoint(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps ``url`` (honours ``TORCH_HOME`` at call time)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _hf_cache_dir() -> str:
    """The HF hub cache, read from the environment now (huggingface_hub freezes it at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _torchvision_weights(name: str):
    from torchvision.models import get_weight

    return get_weight(name)


def _timm_cfg(arch: str) -> dict[str, Any]:
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        raise SpinebenchError(f"timm has no pretrained config for {arch}")
    return cfg.to_dict()


def _timm_cached_file(arch: str) -> Path | None:
    """The cached file timm's default weights for ``arch`` would load (HF hub cache, then torch hub)."""
    cfg = _timm_cfg(arch)
    if cfg.get("hf_hub_id"):
        from huggingface_hub import try_to_load_from_cache

        for fname in _HF_FILENAMES:
            hit = try_to_load_from_cache(cfg["hf_hub_id"], fname, cache_dir=_hf_cache_dir())
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit)
    if cfg.get("url"):
        path = torch_hub_checkpoint(cfg["url"])
        if path.is_file():
            return path
    return None


def weights_cached(spec: str | None) -> bool:
    """Are the weights named by ``spec`` (``torchvision:ResNet50_Weights.DEFAULT`` or ``timm:inception_v3``)
    in the local cache right now? Never touches the network."""
    if not spec:
        return False
    kind, _, name = spec.partition(":")
    try:
        if kind == "torchvision":
            return torch_hub_checkpoint(_torchvision_weights(name).url).is_file()
        if kind == "timm":
            return _timm_cached_file(name) is not None
    except Exception as e:  # a broken cache or unknown name is "not available", not a crash of list-models
        _logger.debug("cannot check cache for %s: %s", spec, e)
        return False
    raise SpinebenchError(f"unknown weights source in {spec!r} (expected torchvision:... or timm:...)")


# ---------------------------------------------------------------------------------------------- failures
def _unavailable(model_name: str, mode: str, reason: str, missing: bool = True) -> None:
    """``imagenet``: raise one clear line. ``auto``: warn once per process per model, go on with random init.
    ``missing=False`` is for weights that are there but do not load (corrupt file, wrong architecture)."""
    what = "are not in the cache and cannot be downloaded" if missing else "cannot be loaded"
    if mode == "imagenet":
        raise SpinebenchError(f"ImageNet weights for {model_name} {what}: {reason}")
    if model_name not in _warned:
        _warned.add(model_name)
        _logger.warning("ImageNet weights for %s %s (%s); using random init", model_name, what, reason)


# ---------------------------------------------------------------------------------------------- loaders
def load_torchvision_state_dict(weights_name: str, model_name: str, mode: str) -> dict[str, torch.Tensor] | None:
    """The ImageNet state dict of a torchvision weights enum (``"ResNet50_Weights.DEFAULT"``), or None.

    Cached file first; a download only where allowed; ``mode`` decides between an error and a fallback.
    """
    mode = check_mode(mode)
    if mode == "none":
        return None
    weights = _torchvision_weights(weights_name)
    path = torch_hub_checkpoint(weights.url)
    if not path.is_file():
        blocker = _download_blocker(urlparse(weights.url).hostname or "")
        if blocker:
            _unavailable(model_name, mode, f"{path} is missing and {blocker}")
            return None
    cached = path.is_file()
    try:
        # load_state_dict_from_url reuses the cached file without a hash check; it downloads only when missing
        return weights.get_state_dict(progress=False, check_hash=False)
    except Exception as e:
        _unavailable(model_name, mode, f"{path}: {type(e).__name__}: {e}" if cached else
                     f"download failed: {type(e).__name__}: {e}", missing=not cached)
        return None


def _timm_weights_file(arch: str, model_name: str, mode: str) -> str | None:
    """A local file holding timm's default ImageNet weights for ``arch`` (downloaded if allowed), or None."""
    cached = _timm_cached_file(arch)
    if cached is not None:
        return str(cached)
    cfg = _timm_cfg(arch)
    hf_id = cfg.get("hf_hub_id")
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname if hf_id \
        else urlparse(cfg.get("url") or "").hostname
    blocker = _download_blocker(host or "")
    if blocker:
        _unavailable(model_name, mode, f"timm weights for {arch} are not cached and {blocker}")
        return None
    try:
        if hf_id:
            from huggingface_hub import hf_hub_download

            last: Exception | None = None
            for fname in _HF_FILENAMES:
                try:
                    return hf_hub_download(hf_id, fname, cache_dir=_hf_cache_dir())
                except Exception as e:  # try the next file name timm would try
                    last = e
            raise last or RuntimeError("no weights file")
        torch.hub.load_state_dict_from_url(cfg["url"], progress=False, check_hash=False, map_location="cpu")
        return str(torch_hub_checkpoint(cfg["url"]))
    except Exception as e:
        _unavailable(model_name, mode, f"download failed: {type(e).__name__}: {e}")
        return None


def create_timm_model(arch: str, model_name: str, mode: str, **kwargs: Any) -> tuple[nn.Module, bool]:
    """``timm.create_model(arch, **kwargs)`` with ImageNet weights when ``mode`` asks and they are at hand.

    Weights go through timm's own loader from a local file (``pretrained_cfg_overlay=dict(file=...)``), so
    timm adapts the first conv to ``in_chans`` (sum over RGB for one channel) and filters what
    ``features_only`` drops. Returns (model, weights_really_loaded).
    """
    import timm

    mode = check_mode(mode)
    path = _timm_weights_file(arch, model_name, mode) if mode != "none" else None
    if path is not None:
        try:
            model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=path), **kwargs)
            return model, True
        except Exception as e:
            _unavailable(model_name, mode, f"{path}: {type(e).__name__}: {e}", missing=False)
    return timm.create_model(arch, pretrained=False, **kwargs), False


# ---------------------------------------------------------------------------------------------- first conv
def to_one_channel(conv: nn.Conv2d) -> nn.Conv2d:
    """A 1-input-channel copy of an RGB ``conv``: weights summed over the input channels (timm's
    ``adapt_input_conv``), exact for a grey image replicated to RGB and normalised with one mean/std."""
    from timm.models import adapt_input_conv

    new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                    padding_mode=conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(adapt_input_conv(1, conv.weight.detach()))
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach())
    return new


def report_unloadable(model_name: str, mode: str, reason: str) -> None:
    """Weights that were found but do not fit the model: an error for ``imagenet``, a warning for ``auto``."""
    _unavailable(model_name, mode, reason, missing=False)


def get_submodule_parent(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    """(parent, attribute) of a dotted submodule path, so the submodule can be replaced."""
    parent_path, _, attr = path.rpartition(".")
    return (model.get_submodule(parent_path) if parent_path else model), attr


def replace_submodule(model: nn.Module, path: str, fn: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Replace ``model.<path>`` by ``fn(old)`` and return the new module."""
    parent, attr = get_submodule_parent(model, path)
    old = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
    new = fn(old)
    if attr.isdigit():
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)
    return new
