"""One MLP factory for every network in MERLION Studio."""

from __future__ import annotations

from typing import Sequence

import contextlib

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
    """An ``nn.Sequential`` of linear layers that computes in the scope's precision and returns fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if network_dtype() is None:
            return super().forward(x)
        with network_autocast(x.device):
            return super().forward(x).float()


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: type[nn.Module] = nn.ReLU) -> MLP:
    """Linear layers of sizes in_dim -> hidden... -> out_dim with ``activation`` between them (an :class:`MLP`)."""
    sizes = [in_dim, *hidden, out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
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
