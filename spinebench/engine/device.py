"""Device choice and per-device settings: CUDA with bf16 autocast and channels-last, else CPU in fp32."""

from __future__ import annotations

import contextlib
import logging
import os
import random

import numpy as np
import torch

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


def precision_of(device: torch.device) -> str:
    """The precision a run on ``device`` trains in (recorded in every result row)."""
    return "bf16-mixed" if device.type == "cuda" else "fp32"


def autocast(device: torch.device):
    """bf16 autocast on CUDA (no loss scaler needed, unlike fp16); a no-op on CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
