"""Training step time per precision (fp32 / bf16-mixed) and memory layout (NCHW / channels-last), and a check of
CPU bf16 convolutions, at the quick profile's input sizes and batches.

Why: ``precision=auto`` trains in bf16 on CPUs with AVX512-BF16 or AMX and keeps weights channels-last on every
CPU (``spinebench.engine.device``); this script is the measurement behind both choices, to re-run on another CPU
or torch. It also checks, for every strided convolution shape a model meets, that its bf16 result (forward and
input gradient) is within 5% of fp32, unguarded and as the models run it (``guard_bf16_convs``): torch 2.14.1's
oneDNN miscomputes strided 3 x 3 convolutions with a one-pixel-wide output, which made Inception-v3's loss NaN.

    python benchmarks/bench_precision.py                        # every model; benchmarks/results/precision_cpu.csv
    python benchmarks/bench_precision.py --models cls_resnet50 --steps 8

Median of ``--steps`` timed AdamW steps after two warm-up steps, random inputs (cost does not depend on values).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import _inputs, _loss  # noqa: E402
from spinebench.engine.device import cpu_has_bf16, guard_bf16_convs  # noqa: E402
from spinebench.engine.profiles import get_profile  # noqa: E402
from spinebench.evaluation.results import append_csv_row  # noqa: E402
from spinebench.models import create_model, list_models, model_info  # noqa: E402

COLUMNS = ["model", "precision", "layout", "batch", "input_size", "step_s", "speedup_vs_fp32_nchw",
           "strided_conv_shapes", "bf16_bad_unguarded", "bf16_bad_guarded", "cpu_bf16", "threads", "torch"]


def quick_shape(name: str) -> tuple[str, tuple[int, int], int, dict]:
    """(task, input size, batch, create_model kwargs) as the quick profile trains ``name``."""
    prof, task = get_profile("quick"), model_info(name)["task"]
    if task == "detection":
        return task, (320, 130), prof.detector.batch_size, dict(prof.detector_kwargs)
    if task == "classification":
        return task, tuple(prof.classifier_sizes.get(name, prof.classifier.image_size)), prof.classifier.batch_size, {}
    return task, tuple(prof.cobb.image_size), prof.cobb.batch_size, {"input_size": prof.cobb.image_size}


def step_time(name: str, precision: str, layout: str, steps: int) -> float:
    task, size, batch, kwargs = quick_shape(name)
    torch.manual_seed(0)
    model = create_model(name, **kwargs).train()
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-4, fused=True)  # fused, as training
    x, y = _inputs(task, size, batch, torch.device("cpu"))
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16-mixed" else contextlib.nullcontext
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        with amp():
            out = model(x, y) if task == "detection" else model(x)
        loss = _loss(task, out, y).float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def _conv_bad(conv: torch.nn.Conv2d, shape: tuple[int, ...], trials: int = 3) -> bool:
    """Whether bf16 autocast gets ``conv`` on inputs of ``shape`` wrong (forward or input gradient, > 5% of max)."""
    for _ in range(trials):
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last).requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(x)
        g = torch.randn(y.shape)
        y.float().backward(g)
        xg = x.grad
        x.grad = None
        ref = conv(x)
        ref.backward(g)
        err = max(float(((y.float() - ref).abs().max() / ref.abs().max()).detach()),
                  float((xg - x.grad).abs().max() / x.grad.abs().max()))
        if not err < 0.05:
            return True
    return False


def conv_check(name: str) -> tuple[int, int, int]:
    """(strided conv shapes met at the quick input, wrong in bf16 unguarded, wrong as the model runs them)."""
    task, size, batch, kwargs = quick_shape(name)
    model = create_model(name, **kwargs).eval()
    seen: dict = {}

    def record(m, args) -> None:
        seen.setdefault((id(m), tuple(args[0].shape[1:])), (m, args[0].shape))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules()
             if isinstance(m, torch.nn.Conv2d) and max(m.stride) > 1]
    x, _ = _inputs(task, size, 1, torch.device("cpu"))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    bad_raw = bad_guarded = 0
    for conv, shape in seen.values():
        raw = copy.deepcopy(conv)
        raw.__class__ = torch.nn.Conv2d
        shape = (batch,) + tuple(shape[1:])
        bad_raw += _conv_bad(raw.train(), shape)
        bad_guarded += _conv_bad(guard_bf16_convs(torch.nn.Sequential(raw))[0], shape)
    return len(seen), bad_raw, bad_guarded


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", help="model names (default: every registered model)")
    ap.add_argument("--steps", type=int, default=4, help="timed training steps per setting (default 4)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "precision_cpu.csv"))
    args = ap.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    has_bf16 = cpu_has_bf16()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native CPU bf16: {has_bf16}")
    for name in args.models or list_models():
        task, size, batch, _ = quick_shape(name)
        n_conv, bad_raw, bad_guarded = conv_check(name) if has_bf16 else ("", "", "")
        base = None
        for precision in ("fp32", "bf16-mixed") if has_bf16 else ("fp32",):
            for layout in ("nchw", "channels_last"):
                s = step_time(name, precision, layout, args.steps)
                base = base or s
                row = dict(model=name, precision=precision, layout=layout, batch=batch, input_size=f"{size[0]}x{size[1]}",
                           step_s=round(s, 3), speedup_vs_fp32_nchw=round(base / s, 2), strided_conv_shapes=n_conv,
                           bf16_bad_unguarded=bad_raw, bf16_bad_guarded=bad_guarded, cpu_bf16=has_bf16,
                           threads=torch.get_num_threads(), torch=torch.__version__)
                append_csv_row(args.out, row, COLUMNS)
                print(f"{name:<38} {precision:<10} {layout:<13} {s:6.3f} s/step  x{base / s:4.2f}  "
                      f"strided convs {n_conv}, wrong in bf16 {bad_raw} unguarded / {bad_guarded} guarded", flush=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
