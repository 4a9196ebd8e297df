"""L1 nearest-neighbour lookup of latent actions (MERLION paper, Eq. 1).

The latent policy outputs e_hat; the real action is g(e_hat) = argmin_a ||e_hat - phi(a; s)||_1
over every action's state-conditional embedding. :func:`l1_nearest` answers that for a batch
of queries, either against a precomputed table ``[B, A, D]`` or straight from a
:class:`~merlion_core.representation.base.Representation`, whose embeddings are then computed
``chunk`` actions at a time and merged into a running top-k, so the full ``[B, A, D]`` table
is never held in memory.

Ties: among equal distances the lowest action index wins. Results are sorted by distance,
then by index, so the output is deterministic and independent of ``chunk``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from merlion_core.representation.base import DEFAULT_CHUNK, FLOAT_BYTES, Representation, check_bytes


def _merge(
    best_d: torch.Tensor | None, best_i: torch.Tensor | None, dist_BC: torch.Tensor, idx_C: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Running top-k: keep the k smallest of (kept, new chunk), ordered by (distance, index)."""
    idx_BC = idx_C[None, :].expand_as(dist_BC)
    if best_d is None:
        cand_d, cand_i = dist_BC, idx_BC
    else:
        if best_i is None:
            raise ValueError("_merge: best_i must be given together with best_d")
        # kept entries all have lower indices than the new chunk and are already in
        # (distance, index) order; the chunk is in index order. A stable sort on distance
        # therefore orders the concatenation by (distance, index).
        cand_d, cand_i = torch.cat([best_d, dist_BC], dim=1), torch.cat([best_i, idx_BC], dim=1)
    if k == 1:  # argmin returns the first minimum: the lowest index among ties
        pos = cand_d.argmin(dim=1, keepdim=True)
        return cand_d.gather(1, pos), cand_i.gather(1, pos)
    order = torch.sort(cand_d, dim=1, stable=True).indices[:, :k]
    return cand_d.gather(1, order), cand_i.gather(1, order)


def l1_nearest(
    query_BD: torch.Tensor,
    table_BAD: torch.Tensor | None = None,
    *,
    k: int = 1,
    representation: Representation | None = None,
    obs_BS: torch.Tensor | None = None,
    chunk: int = DEFAULT_CHUNK,
    max_chunk_bytes: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` actions nearest (L1) to each query: ``(idx int64[B, k], dist[B, k])``.

    Give either ``table_BAD`` (``[B, A, D]``, or ``[1, A, D]`` for a state-independent table,
    shared by every query) or ``representation`` and ``obs_BS`` (``[B, S]``), in which case
    ``representation.embed_chunk(obs_BS, actions)`` is evaluated ``chunk`` actions at a time.
    Rows are sorted by distance, ties broken by the lower action index. The lookup is not
    differentiable: it runs under ``torch.no_grad``. ``max_chunk_bytes`` (None: no cap) bounds one
    chunk's work (the [B, chunk, D] differences plus the representation's ``chunk_bytes``): past it a
    :class:`~merlion_core.representation.base.MemoryCapError` is raised before anything is computed.
    """
    if query_BD.ndim != 2:
        raise ValueError(f"l1_nearest: query must be [B, D], got shape {tuple(query_BD.shape)}")
    b, d = query_BD.shape
    if chunk < 1:
        raise ValueError(f"l1_nearest: chunk must be >= 1, got {chunk}")
    if (table_BAD is None) == (representation is None):
        raise ValueError("l1_nearest: give exactly one of table_BAD or (representation, obs_BS)")

    get_chunk: Callable[[int, int], torch.Tensor]  # (start, stop) -> e[B or 1, stop - start, D]
    if table_BAD is not None:
        if obs_BS is not None:
            raise ValueError("l1_nearest: obs_BS is only used with a representation, not with a table")
        if table_BAD.ndim != 3 or table_BAD.shape[0] not in (1, b) or table_BAD.shape[2] != d:
            raise ValueError(f"l1_nearest: table must be [{b} or 1, A, {d}], got shape {tuple(table_BAD.shape)}")
        n_actions = table_BAD.shape[1]
        get_chunk = lambda start, stop: table_BAD[:, start:stop]  # noqa: E731
    else:
        assert representation is not None
        if obs_BS is None or obs_BS.ndim != 2 or obs_BS.shape[0] != b:
            shape = None if obs_BS is None else tuple(obs_BS.shape)
            raise ValueError(f"l1_nearest: obs_BS must be [{b}, S] with a representation, got {shape}")
        if representation.dim != d:
            raise ValueError(f"l1_nearest: query dim {d} != representation dim {representation.dim}")
        n_actions = representation.n_actions
        get_chunk = lambda start, stop: representation.embed_chunk(  # noqa: E731
            obs_BS, torch.arange(start, stop, device=obs_BS.device)
        )
    if not 1 <= k <= n_actions:
        raise ValueError(f"l1_nearest: k must be in [1, {n_actions}], got {k}")
    width = min(chunk, n_actions)
    needed = b * width * d * FLOAT_BYTES + (0 if representation is None else representation.chunk_bytes(b, width))
    check_bytes("max_chunk_bytes", f"l1_nearest of {b} queries, chunk {width}", needed, max_chunk_bytes)

    best_d: torch.Tensor | None = None
    best_i: torch.Tensor | None = None
    with torch.no_grad():
        for start in range(0, n_actions, chunk):
            stop = min(start + chunk, n_actions)
            actions_C = torch.arange(start, stop, device=query_BD.device)
            e_BCD = get_chunk(start, stop)
            if e_BCD.shape[1:] != (actions_C.shape[0], d) or e_BCD.shape[0] not in (1, b):
                raise ValueError(
                    f"l1_nearest: embeddings of a chunk have shape {tuple(e_BCD.shape)}, "
                    f"expected [{b}, {actions_C.shape[0]}, {d}]"
                )
            dist_BC = (query_BD[:, None, :] - e_BCD).abs().sum(dim=-1)
            best_d, best_i = _merge(best_d, best_i, dist_BC, actions_C, k)
    assert best_d is not None and best_i is not None
    return best_i, best_d
