"""Device choice and per-device settings: bf16 autocast and channels-last on CUDA and on CPUs with bf16 matrix
units (AVX512-BF16 / AMX), fp32 on other CPUs."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random

import numpy as np
import torch
from torch import nn

from spinebench.errors import SpinebenchError

log = logging.getLogger(__name__)


def available_cores() -> int:
    """Cores this process may run on (a container's affinity, not the host's count)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present. Sets a sensible CPU thread count (all cores: training is compute-bound)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise SpinebenchError(f"unknown device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpinebenchError(f"device {device!r} asked for, but CUDA is not available here")
    if dev.type == "cpu":
        torch.set_num_threads(available_cores())
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return dev


@contextlib.contextmanager
def cudnn_autotune(enabled: bool):
    """Turn cuDNN autotuning (``cudnn.benchmark``, on by default on CUDA, see :func:`resolve_device`) off inside.

    Why: autotuning pays off only when input shapes repeat. Classifiers and the landmark model see one fixed input
    size, but the detectors keep each radiograph's aspect ratio, so most batches bring a new padded shape and
    cuDNN re-benchmarks every convolution of the backbone for each of them. The previous setting is restored.
    """
    prev = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = prev and enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = prev


PRECISIONS = ("auto", "fp32", "bf16-mixed")
_precision = {"mode": os.environ.get("SPINEBENCH_PRECISION", "auto")}


def set_precision(mode: str) -> None:
    """``auto`` (bf16-mixed where the hardware has bf16 matrix units, else fp32), ``fp32`` or ``bf16-mixed``.

    A process-wide setting, like ``torch.backends.*``: every task's forward pass reads it through
    :func:`autocast`, so it needs no argument threaded through the engines. ``SPINEBENCH_PRECISION`` sets the
    default; the CLI's ``--precision`` sets it per run. The precision a run really used is recorded in its rows.
    """
    if mode not in PRECISIONS:
        raise SpinebenchError(f"unknown precision {mode!r}; choose from {', '.join(PRECISIONS)}")
    _precision["mode"] = mode


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions and matmuls natively here (AVX512-BF16, AMX-BF16).

    Why it matters: on such a CPU, bf16 autocast trains 1.4-2x faster than fp32 (2-core EPYC/Xeon with AMX,
    ``benchmarks/bench_precision.py``); without the instructions bf16 is emulated and slower than fp32.
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def precision_of(device: torch.device) -> str:
    """The precision a run on ``device`` trains and infers in (recorded in every result row)."""
    mode = _precision["mode"]
    if mode not in PRECISIONS:
        raise SpinebenchError(f"SPINEBENCH_PRECISION={mode!r} is not one of {', '.join(PRECISIONS)}")
    if mode == "fp32":
        return "fp32"
    supported = device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())
    if mode == "bf16-mixed" and not supported:
        log.warning("bf16-mixed asked for, but %s has no native bf16: training in fp32", device)
    return "bf16-mixed" if supported else "fp32"


@contextlib.contextmanager
def scoring_precision():
    """Inside, :func:`autocast` is a no-op: scores are computed in fp32 whatever the run trained in.

    Why: a bf16 forward pass moves a probability by up to ~2e-3, enough to carry an image across a threshold; in
    fp32 the leaderboard, ``evaluate`` and the demo give the same probability for the same weights and image on
    any machine, with or without bf16 units. Training keeps the fast precision; validation runs in fp32 where
    thresholds are chosen on it (``engine.train``), in the fast precision where it only selects (the Cobb model).
    """
    old = _precision["mode"]
    _precision["mode"] = "fp32"
    try:
        yield
    finally:
        _precision["mode"] = old


def autocast(device: torch.device):
    """bf16 autocast where :func:`precision_of` says bf16-mixed (no loss scaler needed, unlike fp16), else a no-op.

    Weights, optimizer state and losses stay fp32; only convolutions and matmuls run in bf16.
    """
    if precision_of(device) == "bf16-mixed":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _NarrowSafeConv2d(nn.Conv2d):
    """A strided Conv2d that runs in fp32 when its output is one pixel wide or high under CPU bf16 autocast.

    Why: oneDNN's bf16 kernel for a strided 3 x 3 convolution with a one-pixel-wide output returns garbage (values
    up to 1e36, or NaN) on AVX512-BF16/AMX CPUs (torch 2.14.1; every try in ``benchmarks/bench_precision.py``).
    Inception-v3 at the quick profile's 192 x 80 input has two such convolutions (Mixed_7a, 10 x 3 -> 4 x 1),
    and its loss went NaN within 1-10 steps; narrow films reach them in the detectors' bodies too. Such a layer
    is tiny, so fp32 costs nothing measurable; every other layer keeps bf16.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            h, w = (
                (n + 2 * p - d * (k - 1) - 1) // s + 1
                for n, p, d, k, s in zip(x.shape[-2:], self.padding if isinstance(self.padding, tuple) else (0, 0),
                                         self.dilation, self.kernel_size, self.stride)
            )
            if h == 1 or w == 1:
                with torch.autocast("cpu", enabled=False):
                    return super().forward(x.float())
        return super().forward(x)


def guard_bf16_convs(model: nn.Module) -> nn.Module:
    """Make every strided Conv2d of ``model`` a :class:`_NarrowSafeConv2d` (same weights and state-dict keys)."""
    for m in model.modules():
        if type(m) is nn.Conv2d and max(m.stride) > 1:
            m.__class__ = _NarrowSafeConv2d
    return model


def channels_last(device: torch.device, fixed_shapes: bool = True) -> bool:
    """Whether to keep weights and inputs channels-last (NHWC) on ``device``.

    On CUDA it pays for fixed input shapes (cuDNN's NHWC kernels with autotuning); on CPU oneDNN prefers NHWC for
    every model here, the detectors' varying shapes included (step time 0.7-0.95x of NCHW, 2-core CPU,
    ``benchmarks/bench_precision.py``).
    """
    return device.type == "cpu" or (device.type == "cuda" and fixed_shapes)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """The global torch RNG (dropout, init), for checkpoints that resume to the same result.

    Shuffling and augmentation draw from generators seeded by (seed, epoch, index), so they need no state;
    keeping only tensors lets checkpoints load with ``weights_only=True``.
    """
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
