"""Mixed precision: network forward passes in bf16 where the hardware has bf16 matrix units.

Training code enters :func:`compute_precision` around a step's losses; every MLP built by
:func:`merlion_core.models.mlp.mlp` then runs its layers under ``torch.autocast`` in bf16 and returns
fp32, so master weights, losses, targets, log-sum-exps, W2 and softmax terms and Adam stay in fp32.
Outside the scope (acting, lookups, evaluation) every network runs in fp32.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: the job specs and the CLI import PRECISIONS
    import torch

PRECISIONS = ("auto", "fp32", "bf16")
"""``auto``: bf16 where the device has bf16 matrix support (a CPU with AMX or AVX512-BF16, a CUDA device
with bf16), else fp32."""

_NETWORK_DTYPE: contextvars.ContextVar[Any] = contextvars.ContextVar("merlion_network_dtype", default=None)


def check_precision(precision: str) -> str:
    """``precision`` if it is one of PRECISIONS; else a one-line ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def cpu_has_bf16_matrix_units() -> bool:
    """True when this CPU reports bf16 matrix instructions (AMX tiles or AVX512-BF16) to torch."""
    import torch

    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``fp32`` or ``bf16``: ``auto`` resolved for ``device`` (see PRECISIONS)."""
    import torch

    check_precision(precision)
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if device.type == "cpu" and cpu_has_bf16_matrix_units() else "fp32"


@contextlib.contextmanager
def compute_precision(precision: str) -> Iterator[None]:
    """Within the block, networks built by ``mlp()`` compute in ``precision`` (``fp32`` or ``bf16``)."""
    import torch

    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision: resolve {precision!r} to fp32 or bf16 first")
    token = _NETWORK_DTYPE.set(torch.bfloat16 if precision == "bf16" else None)
    try:
        yield
    finally:
        _NETWORK_DTYPE.reset(token)


def network_dtype() -> torch.dtype | None:
    """The reduced dtype networks compute in here (None: fp32)."""
    return _NETWORK_DTYPE.get()


def flush_denormals() -> bool:
    """Turn on flush-to-zero for subnormal floats on the CPU (x86 FTZ/DAZ) for this process; True when
    the CPU supports it. The training pipelines set it: values below 1.2e-38 appear as the encoder
    trains and the CPU computes on them slowly, so without it a step slows down as training goes on
    (bench/encoder.py with and without it, docs/results.md, "Training speed"). Added to a normal
    number, a subnormal is below fp32's resolution of it. torch has no getter for the flag, so it
    stays on."""
    import torch

    return bool(torch.set_flush_denormal(True))
