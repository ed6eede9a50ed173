"""The model registry (timm style): the name is the key, every script loops over it.

    @register_model(task="classification", paper_name="ResNet", input_size=(224, 224), card="...",
                    weights="torchvision:ResNet50_Weights.DEFAULT")
    def cls_resnet50(pretrained: str = "none", **kwargs) -> nn.Module: ...

    model = create_model("cls_resnet50", pretrained="auto", num_classes=None)  # None: keep the default

Tasks are free strings ("classification", "detection", later "cobb"...); nothing here assumes a fixed set.
Every created model carries ``model.pretrained_loaded`` (bool) and ``model.default_cfg`` (dict).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

import torch
from torch import nn

from spinebench.engine.device import guard_bf16_convs
from spinebench.errors import SpinebenchError
from spinebench.models.pretrained import check_mode, weights_cached

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about a model without building it."""

    name: str
    fn: Callable[..., nn.Module]
    task: str
    paper_name: str
    input_size: tuple[int, int]
    card: str
    weights: str | None = None  # "torchvision:<Enum>.<VALUE>" | "timm:<arch>" | None
    extra: dict[str, Any] = field(default_factory=dict)


_registry: dict[str, ModelEntry] = {}


def register_model(*, task: str, paper_name: str, input_size: tuple[int, int], card: str,
                   weights: str | None = None, **extra: Any) -> Callable:
    """Register ``fn(pretrained="none", **kwargs) -> nn.Module`` under its function name.

    ``weights`` names the ImageNet/COCO weights that ``pretrained`` loads (for ``pretrained_available``);
    ``extra`` keys are copied into :func:`model_info`.
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _registry and _registry[name].fn.__module__ != fn.__module__:
            _logger.warning("model %s from %s replaces the one from %s", name, fn.__module__,
                            _registry[name].fn.__module__)
        _registry[name] = ModelEntry(name=name, fn=fn, task=task, paper_name=paper_name,
                                     input_size=tuple(input_size), card=" ".join(card.split()),
                                     weights=weights, extra=dict(extra))
        return fn

    return decorator


def list_models(task: str | None = None) -> list[str]:
    """Registered model names (registration order), optionally only those of one ``task``."""
    return [n for n, e in _registry.items() if task is None or e.task == task]


def model_entry(name: str) -> ModelEntry:
    """The registration of ``name`` (SpinebenchError listing the known names if there is none)."""
    try:
        return _registry[name]
    except KeyError:
        raise SpinebenchError(f"unknown model {name!r}; known models: {', '.join(_registry)}") from None


def create_model(name: str, pretrained: str = "none", **kwargs: Any) -> nn.Module:
    """Build a registered model. Keyword arguments left None are dropped so the model keeps its defaults.

    ``pretrained``: ``"none"`` (random init), ``"imagenet"`` (ImageNet weights or a SpinebenchError) or
    ``"auto"`` (ImageNet weights when at hand, else one warning and random init); see ``pretrained.py``.
    """
    entry = model_entry(name)
    mode = check_mode(pretrained)
    model = entry.fn(pretrained=mode, **{k: v for k, v in kwargs.items() if v is not None})
    # a later model that does not set these still honours the contract
    if not hasattr(model, "pretrained_loaded"):
        model.pretrained_loaded = False
    cfg = dict(getattr(model, "default_cfg", None) or {})
    for key, value in (("name", name), ("task", entry.task), ("paper_name", entry.paper_name),
                       ("input_size", entry.input_size)):
        cfg.setdefault(key, value)
    cfg["pretrained"] = mode
    model.default_cfg = cfg
    return guard_bf16_convs(model)  # CPU bf16 autocast miscomputes some narrow strided convolutions


@lru_cache(maxsize=None)
def _params_m(name: str) -> float:
    """Parameters in millions, counted on the meta device (no memory, no init cost); CPU if meta fails."""
    entry = model_entry(name)
    try:
        with torch.device("meta"):
            model = entry.fn(pretrained="none")
    except Exception as e:  # some builders create real tensors; count them the slow way
        _logger.debug("meta build of %s failed (%s); building on CPU", name, e)
        model = entry.fn(pretrained="none")
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 3)


def model_info(name: str) -> dict[str, Any]:
    """A model's facts without training it: name, task, params_m, input_size, pretrained_available (weights in
    the local cache now, no network), paper_name, card; plus any extra registration keys."""
    entry = model_entry(name)
    info = {
        "name": entry.name,
        "task": entry.task,
        "params_m": _params_m(name),
        "input_size": entry.input_size,
        "pretrained_available": weights_cached(entry.weights),
        "paper_name": entry.paper_name,
        "card": entry.card,
        "weights": entry.weights,
    }
    info.update({k: v for k, v in entry.extra.items() if k not in info})
    return info
