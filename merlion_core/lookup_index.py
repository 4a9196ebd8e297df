"""Approximate L1 nearest-neighbour lookup for large action sets (a candidate index, refined exactly).

The exact lookup (:func:`merlion_core.lookup.l1_nearest`) evaluates phi(a; s) for every action
at every query state. This index splits the work in two:

1. Offline, state-independent: every action gets a key vector (:func:`action_keys`: phi at a few
   reference states, concatenated; or any [A, K] table, e.g. the encoder's action-id embedding),
   and k-means (:func:`kmeans`, seeded) groups the keys into M clusters. Each cluster keeps a
   representative: the member nearest its centroid.
2. Per query (e_hat at state s): phi(representative; s) for the M representatives, the clusters in
   order of L1 distance to e_hat until at least C actions are gathered, then phi(a; s) for those
   candidates only, and their exact top-k (ties: lower action index first, as ``l1_nearest``).

With C >= |A| every cluster is probed and the answer equals the exact lookup. :func:`recall_at_k`
measures the share of the exact top-k that the index returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from merlion_core.representation.base import DEFAULT_CHUNK, FLOAT_BYTES, Representation, check_bytes


@dataclass(frozen=True)
class IndexConfig:
    """The candidate index: k-means over action keys, probed per query, refined by phi(a; s)."""

    n_clusters: int = 0
    """M: k-means clusters of the action keys (0 = round(4 sqrt(|A|)))."""
    candidates: int = 2048
    """C: each query refines at least this many actions exactly (whole clusters, nearest first)."""
    kmeans_iters: int = 10
    """Lloyd iterations of the k-means."""
    seed: int = 0
    """Seed of the k-means initialisation (M distinct keys drawn at random)."""
    chunk: int = DEFAULT_CHUNK
    """Keys per chunk of the k-means assignment; queries x chunk (state, action) pairs per phi call."""
    max_chunk_bytes: int = 2**30
    """Cap on one chunk's work (distances to centroids, phi's activations); 0 = no cap."""

    def __post_init__(self) -> None:
        for name in ("n_clusters", "max_chunk_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"IndexConfig.{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("candidates", "kmeans_iters", "chunk"):
            if getattr(self, name) < 1:
                raise ValueError(f"IndexConfig.{name}: must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class ActionIndex:
    """Clusters of actions: ``members`` (action ids grouped by cluster, each cluster's representative
    first) with cluster m at ``members[offsets[m]:offsets[m + 1]]``; empty clusters are dropped."""

    centroids_MK: torch.Tensor
    members_A: torch.Tensor
    offsets_M1: torch.Tensor
    config: IndexConfig

    @property
    def representatives_M(self) -> torch.Tensor:
        return self.members_A[self.offsets_M1[:-1]]

    @property
    def sizes_M(self) -> torch.Tensor:
        return self.offsets_M1[1:] - self.offsets_M1[:-1]


@torch.no_grad()
def action_keys(
    representation: Representation, reference_obs_RS: torch.Tensor, chunk: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """keys [A, R * D]: phi(a; s_r) at the R reference states, concatenated (computed ``chunk`` actions at a time)."""
    if reference_obs_RS.ndim != 2 or reference_obs_RS.shape[0] < 1:
        raise ValueError(f"action_keys: reference states must be [R >= 1, S], got {tuple(reference_obs_RS.shape)}")
    device = reference_obs_RS.device
    parts = []
    for start in range(0, representation.n_actions, chunk):
        actions = torch.arange(start, min(start + chunk, representation.n_actions), device=device)
        e_RCD = representation.embed_chunk(reference_obs_RS, actions)
        parts.append(e_RCD.permute(1, 0, 2).reshape(actions.shape[0], -1))
    return torch.cat(parts)


def _nearest_centroid(points_NK: torch.Tensor, centroids_MK: torch.Tensor, chunk: int) -> torch.Tensor:
    """assign [N]: the squared-L2 nearest centroid of each point, ``chunk`` points at a time."""
    c_sq = (centroids_MK**2).sum(1)
    parts = [
        (c_sq[None, :] - 2.0 * part @ centroids_MK.T).argmin(dim=1) for part in points_NK.split(chunk)
    ]  # ||x||^2 is the same for every centroid: left out
    return torch.cat(parts)


@torch.no_grad()
def kmeans(
    points_NK: torch.Tensor, n_clusters: int, iters: int, seed: int, chunk: int = DEFAULT_CHUNK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means (squared L2), initialised with ``n_clusters`` distinct points drawn with ``seed``;
    a cluster that empties keeps its centroid. Returns (centroids [M, K], assignment int64 [N])."""
    n = points_NK.shape[0]
    if not 1 <= n_clusters <= n:
        raise ValueError(f"kmeans: n_clusters must be in [1, {n}], got {n_clusters}")
    generator = torch.Generator().manual_seed(seed)
    centroids = points_NK[torch.randperm(n, generator=generator)[:n_clusters].to(points_NK.device)].clone()
    assign = _nearest_centroid(points_NK, centroids, chunk)
    for _ in range(iters):
        counts = torch.bincount(assign, minlength=n_clusters)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points_NK)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None].to(sums.dtype)
        assign = _nearest_centroid(points_NK, centroids, chunk)
    return centroids, assign


def build_index(keys_AK: torch.Tensor, config: IndexConfig = IndexConfig()) -> ActionIndex:
    """The index over the actions whose state-independent keys are ``keys_AK`` ([A, K])."""
    if keys_AK.ndim != 2 or keys_AK.shape[0] < 1:
        raise ValueError(f"build_index: keys must be [A >= 1, K], got {tuple(keys_AK.shape)}")
    n = keys_AK.shape[0]
    m = config.n_clusters or max(1, round(4 * n**0.5))
    m = min(m, n)
    needed = min(config.chunk, n) * m * FLOAT_BYTES * 2
    check_bytes("max_chunk_bytes", f"k-means of {n} keys into {m} clusters", needed, config.max_chunk_bytes or None)
    keys = keys_AK.float()
    centroids, assign = kmeans(keys, m, config.kmeans_iters, config.seed, config.chunk)
    own = ((keys - centroids[assign]) ** 2).sum(1)
    by_distance = torch.argsort(own, stable=True)
    members = by_distance[torch.argsort(assign[by_distance], stable=True)]  # by cluster, nearest first
    counts = torch.bincount(assign, minlength=m)
    filled = counts > 0
    offsets = torch.cat([counts.new_zeros(1), counts[filled].cumsum(0)])
    return ActionIndex(centroids[filled], members, offsets, config)


def _candidates(index: ActionIndex, dist_BM: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(query row, action id) of every candidate pair: each query's clusters nearest first, whole, until
    at least ``c`` actions are gathered. Rows come in query order."""
    order_BM = torch.argsort(dist_BM, dim=1, stable=True)
    sizes_BM = index.sizes_M[order_BM]
    probe_BM = sizes_BM.cumsum(1) - sizes_BM < c
    rows_P, cols_P = probe_BM.nonzero(as_tuple=True)  # row-major: grouped by query
    clusters_P = order_BM[rows_P, cols_P]
    counts_P = index.sizes_M[clusters_P]
    total = int(counts_P.sum())
    starts_P = counts_P.cumsum(0) - counts_P
    within = torch.arange(total, device=dist_BM.device) - starts_P.repeat_interleave(counts_P)
    actions = index.members_A[index.offsets_M1[clusters_P].repeat_interleave(counts_P) + within]
    return rows_P.repeat_interleave(counts_P), actions


@torch.no_grad()
def query_index(
    index: ActionIndex,
    representation: Representation,
    query_BD: torch.Tensor,
    obs_BS: torch.Tensor,
    k: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` candidates nearest (L1) to each query by the state-conditional phi(a; s):
    ``(idx int64[B, k], dist[B, k])``, sorted by distance then action index (as ``l1_nearest``)."""
    if query_BD.ndim != 2 or obs_BS.ndim != 2 or obs_BS.shape[0] != query_BD.shape[0]:
        raise ValueError(
            f"query_index: need query [B, D] and obs [B, S], got {tuple(query_BD.shape)}, {tuple(obs_BS.shape)}"
        )
    b, d = query_BD.shape
    if representation.dim != d:
        raise ValueError(f"query_index: query dim {d} != representation dim {representation.dim}")
    n_actions = int(index.members_A.shape[0])
    if n_actions != representation.n_actions:
        raise ValueError(f"query_index: index has {n_actions} actions, representation {representation.n_actions}")
    if not 1 <= k <= min(index.config.candidates, n_actions):
        raise ValueError(
            f"query_index: k must be in [1, min(candidates, |A|) = {min(index.config.candidates, n_actions)}], got {k}"
        )
    config = index.config
    width = min(config.chunk, n_actions)
    needed = b * width * d * FLOAT_BYTES + representation.chunk_bytes(b, width)
    check_bytes("max_chunk_bytes", f"query_index of {b} queries, chunk {width}", needed, config.max_chunk_bytes or None)
    reps = index.representatives_M
    dist_BM = torch.cat(
        [
            (query_BD[:, None, :] - representation.embed_chunk(obs_BS, part)).abs().sum(-1)
            for part in reps.split(config.chunk)
        ],
        dim=1,
    )
    rows_P, actions_P = _candidates(index, dist_BM, config.candidates)
    dist_P = torch.cat(
        [
            (query_BD[r] - representation.embed(obs_BS[r], a)).abs().sum(-1)
            for r, a in zip(rows_P.split(b * config.chunk), actions_P.split(b * config.chunk), strict=True)
        ]
    )
    order = torch.argsort(actions_P, stable=True)  # then by distance, then by query: (query, dist, action)
    order = order[torch.argsort(dist_P[order], stable=True)]
    order = order[torch.argsort(rows_P[order], stable=True)]
    counts_B = torch.bincount(rows_P, minlength=b)
    rank = torch.arange(rows_P.shape[0], device=rows_P.device) - (counts_B.cumsum(0) - counts_B).repeat_interleave(
        counts_B
    )
    keep = order[rank < k]
    return actions_P[keep].reshape(b, k), dist_P[keep].reshape(b, k)


def recall_at_k(approx_idx_BK: torch.Tensor, exact_idx_BK: torch.Tensor) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k: in [0, 1], 1 when every exact neighbour is found."""
    if approx_idx_BK.shape != exact_idx_BK.shape or approx_idx_BK.ndim != 2:
        raise ValueError(
            f"recall_at_k: need two [B, k] index tensors, got {tuple(approx_idx_BK.shape)}, {tuple(exact_idx_BK.shape)}"
        )
    found = (exact_idx_BK[:, :, None] == approx_idx_BK[:, None, :]).any(dim=2)
    return float(found.float().mean())
