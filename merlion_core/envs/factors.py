"""Factorised discrete action spaces: flat action ids <-> sub-actions, big-endian mixed radix.

An env whose action set is a product A = A_1 x ... x A_K with |A_k| = n_k (the factors) numbers
its flat actions in big-endian mixed radix: sub-action k is the k-th digit, the first one most
significant, so

    id = sum_k a_k * stride_k,   stride_k = n_{k+1} * ... * n_K,   a_k = (id // stride_k) mod n_k.

This is the maze's numbering (``2**n_actuators`` actions, digit k = actuator k on/off,
:func:`~merlion_core.envs.maze.displacement_table`) and the multi-step maze's (``4**plan_length``
plans, digit k = the k-th move, :func:`~merlion_core.envs.multistep_maze.plan_moves`). Such an env's
model declares ``action_factors`` ((2,) * n_actuators and (4,) * plan_length); the recommender
and the dialogue declare none.

The conversions take numpy arrays or torch tensors (torch is not imported here: a tensor's own
methods do the work) and are vectorised over any leading shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def check_factors(factors: Sequence[int], where: str = "action_factors") -> tuple[int, ...]:
    """The factors (n_1..n_K) as a tuple of ints; a one-line ValueError unless K >= 1 and every n_k >= 2."""
    values = tuple(factors)
    if not values:
        raise ValueError(f"{where}: needs at least one sub-action size, got ()")
    if any(isinstance(n, bool) or int(n) != n for n in values):
        raise ValueError(f"{where}: sub-action sizes must be integers, got {values}")
    if any(n < 2 for n in values):
        raise ValueError(f"{where}: every sub-action size must be >= 2, got {values}")
    return tuple(int(n) for n in values)


def n_flat_actions(factors: Sequence[int]) -> int:
    """|A| = n_1 * ... * n_K."""
    return math.prod(check_factors(factors))


def mixed_radix_strides(factors: Sequence[int]) -> tuple[int, ...]:
    """stride_k = n_{k+1} * ... * n_K (big-endian: the first sub-action is the most significant digit)."""
    values = check_factors(factors)
    return tuple(math.prod(values[k + 1 :]) for k in range(len(values)))


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


def _like(x: Any, values: Sequence[int]) -> Any:
    """``values`` as an int64 array (numpy ``x``) or an int64 tensor on ``x``'s device (torch ``x``, int64)."""
    return x.new_tensor(list(values)) if _is_tensor(x) else np.asarray(values, dtype=np.int64)


def _as_int64(x: Any, where: str) -> Any:
    if _is_tensor(x):
        if x.dtype.is_floating_point or x.dtype.is_complex or str(x.dtype) == "torch.bool":
            raise ValueError(f"{where}: expected integer ids, got dtype {x.dtype}")
        return x.long()
    arr = np.asarray(x)
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{where}: expected integer ids, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def decode_mixed_radix(ids: Any, strides: Any, factors: Any) -> Any:
    """int64[..., K]: sub-actions (ids[..., None] // strides) mod factors, unchecked (the hot path:
    ``strides`` and ``factors`` are int64 arrays / tensors of shape [K] next to ``ids``)."""
    return (ids[..., None] // strides) % factors


def encode_mixed_radix(sub: Any, strides: Any) -> Any:
    """int64[...]: flat ids sum_k sub[..., k] * strides[k], unchecked."""
    return (sub * strides).sum(-1)


def flat_to_sub_actions(ids: Any, factors: Sequence[int]) -> Any:
    """int64[..., K]: the sub-actions of flat action ids int[...] (numpy in, numpy out; torch in, torch out)."""
    values = check_factors(factors)
    ids = _as_int64(ids, "flat_to_sub_actions: ids")
    n = math.prod(values)
    if (ids.numel() if _is_tensor(ids) else ids.size) > 0:
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= n:
            raise ValueError(f"flat_to_sub_actions: ids must be in [0, {n}) for factors {values}, got [{low}, {high}]")
    return decode_mixed_radix(ids, _like(ids, mixed_radix_strides(values)), _like(ids, values))


def sub_actions_to_flat(sub: Any, factors: Sequence[int]) -> Any:
    """int64[...]: the flat action ids of sub-actions int[..., K] (the inverse of :func:`flat_to_sub_actions`)."""
    values = check_factors(factors)
    sub = _as_int64(sub, "sub_actions_to_flat: sub")
    if sub.ndim < 1 or sub.shape[-1] != len(values):
        raise ValueError(
            f"sub_actions_to_flat: sub must have shape [..., {len(values)}] for factors {values}, "
            f"got {tuple(sub.shape)}"
        )
    radices = _like(sub, values)
    bad = (sub < 0) | (sub >= radices)
    if bool(bad.any()):
        bad_k = bad.reshape(-1, len(values)).any(0)
        k = next(k for k in range(len(values)) if bool(bad_k[k]))
        raise ValueError(f"sub_actions_to_flat: sub-action {k} must be in [0, {values[k]}) for factors {values}")
    return encode_mixed_radix(sub, _like(sub, mixed_radix_strides(values)))


def env_action_factors(env_id: str | None, env_overrides: dict[str, Any] | None = None) -> tuple[int, ...] | None:
    """The sub-action sizes (n_1..n_K) the env's model declares (``action_factors``), or None when
    it declares none (recommender, dialogue) or ``env_id`` is empty (a dataset with no simulator)."""
    if not env_id:
        return None
    from merlion_core.envs.registry import get_spec, make_model

    if getattr(get_spec(env_id).model_cls, "action_factors", None) is None:  # no model built for the others
        return None
    return check_factors(make_model(env_id, env_overrides).action_factors, f"{env_id}: action_factors")
