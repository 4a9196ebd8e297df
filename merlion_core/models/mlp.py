"""One MLP factory for every network in MERLION Studio."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from merlion_core.models.precision import network_dtype


def network_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to the reduced dtype of :func:`~merlion_core.models.precision.compute_precision`
    on ``device`` (no weight cache: each scope is one network's pass, and CUDA graphs capture it); a
    no-op in fp32."""
    dtype = network_dtype()
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=False)


class MLP(nn.Sequential):
    """An ``nn.Sequential`` of linear layers that computes in the scope's precision and returns fp32.

    :func:`compile_networks` gives it a ``torch.compile``d body (fused activations and casts); a body
    that fails to compile falls back to eager for good and ``compile_status`` says why."""

    _compiled_body: Callable[[torch.Tensor, Any], torch.Tensor] | None = None
    compile_status = "eager"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = network_dtype()  # read here: a context variable is opaque to torch.compile
        if self._compiled_body is not None:
            try:
                return self._compiled_body(x, dtype)
            except Exception as exc:  # noqa: BLE001 - any compiler failure: eager from now on
                self._compiled_body = None
                self.compile_status = f"eager (compile failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        return self._body(x, dtype)

    def _body(self, x: torch.Tensor, dtype: Any) -> torch.Tensor:
        if dtype is None:
            for layer in self:
                x = layer(x)
            return x
        with torch.autocast(x.device.type, dtype=dtype, cache_enabled=False):
            for layer in self:
                x = layer(x)
        return x.float()


def compile_networks(model: nn.Module) -> int:
    """Give every :class:`MLP` inside ``model`` a ``torch.compile``d body; the number of MLPs. State
    dict keys do not change (checkpoints load either way). Compilation happens on first use. Measured
    no faster than eager for this project's networks on this CPU (bench/speed.py, ``compiled`` rows), so
    no training command turns it on; it stays for measurement and for hardware where it pays."""
    count = 0
    for module in model.modules():
        if isinstance(module, MLP):
            module._compiled_body = torch.compile(module._body, dynamic=False)
            module.compile_status = "compiled"
            count += 1
    return count


def compile_status(model: nn.Module) -> str:
    """``compiled``, ``eager``, or the first fallback reason among ``model``'s MLPs."""
    statuses = [m.compile_status for m in model.modules() if isinstance(m, MLP)]
    failed = [s for s in statuses if s.startswith("eager (")]
    return failed[0] if failed else ("compiled" if "compiled" in statuses else "eager")


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: type[nn.Module] = nn.ReLU) -> MLP:
    """Linear layers of sizes in_dim -> hidden... -> out_dim with ``activation`` between them (an :class:`MLP`)."""
    sizes = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return MLP(*layers)


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available (respecting CUDA_VISIBLE_DEVICES), else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor (minibatch indices) on ``device``; to CUDA pinned and non-blocking, so the
    host does not wait for the GPU's queue."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
