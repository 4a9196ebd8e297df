"""MERLION at catalogue scale: the sampled softmax of G, the exact max / I_hat without an |A|-wide
tensor, the memory caps, and the approximate lookup index against the exact one."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from merlion_core.data.dataset import from_arrays
from merlion_core.lookup import l1_nearest
from merlion_core.lookup_index import IndexConfig, action_keys, build_index, kmeans, query_index, recall_at_k
from merlion_core.models.heads import BehaviourModel
from merlion_core.representation import losses
from merlion_core.representation.base import MemoryCapError, Representation
from merlion_core.representation.merlion import (
    MerlionConfig,
    build,
    fit,
    merlion_losses,
    module_parameters,
    train_steps,
)


def synthetic_dataset(n_actions, n=400, seed=0, peaked=False):
    """Random maze-shaped transitions (obs_dim 3); ``peaked``: the action is a function of the state."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    actions = (obs[:, 0] > 0).astype(np.int64) * 3 if peaked else rng.integers(0, n_actions, n)
    fields = {
        "observations": obs,
        "actions": actions,
        "rewards": rng.normal(size=n).astype(np.float32),
        "next_observations": rng.normal(size=(n, 3)).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.arange(n) % 50 == 49,
    }
    return from_arrays(fields, n_actions=n_actions)


# ---------------------------------------------------------------- sampled softmax (Eq. 26 estimated)
def test_sampled_softmax_loss_by_hand_with_log_q_correction_and_accidental_hits():
    logits = torch.tensor([1.0, 2.0, 3.0, 4.0])
    # target 0, negatives {1, 3} of |A| = 4, K = 2: each negative weighted by |A| / K = 2
    loss = losses.sampled_softmax_loss(logits[:1], logits[[1, 3]][None], torch.tensor([0]), torch.tensor([1, 3]), 4)
    assert loss.item() == pytest.approx(math.log(math.e + 2 * math.e**2 + 2 * math.e**4) - 1.0, rel=1e-6)
    # an accidental hit (negative == target) is removed
    hit = losses.sampled_softmax_loss(logits[:1], logits[[0, 3]][None], torch.tensor([0]), torch.tensor([0, 3]), 4)
    assert hit.item() == pytest.approx(math.log(math.e + 2 * math.e**4) - 1.0, rel=1e-6)


def test_sampled_partition_estimate_is_unbiased_by_enumeration():
    """E[Z_hat] = Z exactly: every ordered pair of uniform negatives of |A| = 4, K = 2 (16 equally likely)."""
    logits = torch.tensor([0.3, -1.0, 2.0, 0.5], dtype=torch.float64)
    target = torch.tensor([2])
    z_hats = []
    for a in range(4):
        for b in range(4):
            neg = torch.tensor([a, b])
            loss = losses.sampled_softmax_loss(logits[target], logits[neg][None], target, neg, 4)
            z_hats.append(math.exp(loss.item() + logits[2].item()))  # loss = log Z_hat - logit_target
    assert np.mean(z_hats) == pytest.approx(logits.exp().sum().item(), rel=1e-12)


def test_sampled_softmax_gradient_expectation_matches_full_softmax():
    """Mean gradient over 2000 draws of K = 50 uniform negatives of |A| = 200 against the exact softmax
    gradient. Stated tolerance: relative L1 error < 0.08 (bias O(1/K) plus Monte-Carlo noise; measured
    about 0.04). Without the logQ correction the target's share is |A|/K too large: error > 0.2."""
    n_actions, k, y = 200, 50, 3
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n_actions, generator=g)
    logits[y] = 4.0  # the logged action is likely (p about 0.14), as G learns it to be
    full = torch.softmax(logits, 0)
    full[y] -= 1.0

    def mean_grad(n_for_correction):
        total = torch.zeros(n_actions)
        for _ in range(2000):
            neg = torch.randint(0, n_actions, (k,), generator=g)
            x = logits.clone().requires_grad_(True)
            losses.sampled_softmax_loss(x[y : y + 1], x[neg][None], torch.tensor([y]), neg, n_for_correction).backward()
            total += x.grad
        return total / 2000

    def rel_error(grad):
        return float((grad - full).abs().sum() / full.abs().sum())

    assert rel_error(mean_grad(n_actions)) < 0.08
    assert rel_error(mean_grad(k)) > 0.2  # n_actions = K: no correction, a wrong estimator


# ---------------------------------------------------------------- exact max and I_hat, chunked
def test_chunked_max_and_subset_logits_equal_the_full_forward():
    torch.manual_seed(0)
    model = BehaviourModel(3, 37, (16, 8))
    obs = torch.randn(5, 3)
    full = model(obs)
    for chunk in (1, 4, 36, 37, 1000):
        assert torch.allclose(model.chunked_max_logit(model.features(obs), chunk), full.max(1).values, atol=1e-6)
    h = model.features(obs)
    actions = torch.tensor([0, 36, 5, 5])
    assert torch.allclose(model.logits_of(h, actions), full[:, actions], atol=1e-6)
    act = torch.tensor([1, 2, 3, 4, 36])
    assert torch.allclose(model.pair_logits(h, act), full.gather(1, act[:, None]).squeeze(1), atol=1e-6)
    with pytest.raises(ValueError, match="chunk"):
        model.chunked_max_logit(h, 0)


def test_bounded_ood_indicator_by_hand_scans_only_undecided_rows():
    tau = 0.5  # log tau = -0.693
    logit_j = torch.tensor([0.0, 0.0, 0.0, 0.0])
    lower = torch.tensor([5.0, 0.2, 0.1, 0.0])  # row 0: out whatever the max (0 - 5 <= log tau)
    upper = torch.tensor([9.0, 1.0, 4.0, 0.6])  # row 3: in whatever the max (0 - 0.6 > log tau)
    true_max = torch.tensor([9.0, 0.2, 3.0, 0.3])
    asked = []

    def row_max(rows):
        asked.append(rows.tolist())
        return true_max[rows]

    def upper_of(rows):
        asked.append(("upper", rows.tolist()))
        return upper[rows]

    ood, scanned = losses.ood_indicator_bounded(logit_j, lower, upper_of, tau, row_max)
    assert ood.tolist() == [1.0, 0.0, 1.0, 0.0] and scanned.item() == 0.5
    assert asked == [("upper", [1, 2, 3]), [1, 2]]  # the upper bound only where the lower one is not enough
    full = torch.stack([torch.zeros(4), true_max], dim=1)
    assert torch.equal(ood, losses.ood_indicator(full, torch.zeros(4, dtype=torch.long), tau))
    asked.clear()
    ood, scanned = losses.ood_indicator_bounded(logit_j, lower, None, tau, row_max)  # no upper bound
    assert ood.tolist() == [1.0, 0.0, 1.0, 0.0] and asked == [[1, 2, 3]] and scanned.item() == 0.75


def test_max_logit_upper_bound_holds_and_is_tight_for_a_flat_g():
    torch.manual_seed(1)
    model = BehaviourModel(3, 500, (16, 8))
    h = model.features(torch.randn(20, 3))
    true_max = model.chunked_max_logit(h, 64)
    assert (model.max_logit_upper_bound(h) >= true_max - 1e-5).all()
    with torch.no_grad():  # nearly identical rows of W: the bound comes within 0.01 of the max
        model.output.weight.copy_(model.output.weight[:1] + 1e-4 * torch.randn(500, 8))
        model.output.bias.fill_(0.1)
    gap = model.max_logit_upper_bound(h) - model.chunked_max_logit(h, 64)
    assert (gap >= -1e-5).all() and (gap < 0.01).all()


def test_upper_bound_schedule_backs_off_while_useless_and_resets_when_it_decides():
    model = BehaviourModel(3, 50, (8, 4))
    tried = []
    for step in range(300):
        if model.upper_bound_due():
            tried.append(step)
            model.record_upper_bound(0)  # decides nothing: waits of 1, 2, 4, ... 64 steps
    assert tried[:8] == [0, 2, 5, 10, 19, 36, 69, 134] and tried[8] == 199  # capped at 64
    model.record_upper_bound(3)  # a try that decided rows: tried again at every step
    assert model.upper_bound_due() and model.upper_bound_due()


def test_skipping_the_upper_bound_changes_no_weight():
    """The schedule only moves rows from the bound to the exact scan: 120 sampled steps with it and
    with the bound tried at every step end with identical weights, the same OOD shares at every log,
    and the bound tried fewer times."""
    dataset = synthetic_dataset(64, n=256, peaked=True)
    config = MerlionConfig(
        steps=120, batch_size=32, hidden=32, action_embed_dim=8, log_every=10, lr=1e-2, tau=0.9,
        behaviour_loss="sampled", behaviour_samples=8, behaviour_chunk=10,
    )  # fmt: skip
    runs = []
    for always in (False, True):
        rep = build(config, 64, 3)
        model = rep.behaviour_model
        tries = []
        bound = model.max_logit_upper_bound
        model.max_logit_upper_bound = lambda h, bound=bound, tries=tries: tries.append(1) or bound(h)
        if always:
            model.upper_bound_due = lambda: True
        shares = [m["ood_share"] for _, m in train_steps(rep, dataset, config, device="cpu")]
        runs.append((rep.state_dict(), shares, len(tries)))
    (scheduled, shares_s, tries_s), (every, shares_e, tries_e) = runs
    assert all(torch.equal(scheduled[k], every[k]) for k in every)
    assert shares_s == shares_e and 0 < tries_s < tries_e


def test_sampled_step_has_the_exact_ood_indicator_and_target_of_the_full_step():
    """Only J(G) differs between 'full' and 'sampled': I_hat, d_hat and the other losses are the same."""
    rep = build(MerlionConfig(dim=3, hidden=16, action_embed_dim=4, tau=0.9), 300, 3)
    g = torch.Generator().manual_seed(1)
    obs, next_obs = torch.randn(64, 3, generator=g), torch.randn(64, 3, generator=g)
    act_i, act_j = torch.randint(0, 300, (64,), generator=g), torch.randint(0, 300, (64,), generator=g)
    rew, negatives = torch.randn(64, generator=g), torch.randint(0, 300, (16,), generator=g)
    full = merlion_losses(rep, obs, act_i, rew, next_obs, act_j, rep.config)
    sampled_config = dataclasses.replace(rep.config, behaviour_loss="sampled", behaviour_chunk=7)
    sampled = merlion_losses(rep, obs, act_i, rew, next_obs, act_j, sampled_config, negatives_K=negatives)
    assert 0.0 < full["ood_share"].item() < 1.0  # both kinds of rows occur
    for key in ("ood_share", "d_hat_mean", "encoder_loss", "transition_loss", "reward_loss"):
        assert sampled[key].item() == pytest.approx(full[key].item(), rel=1e-6), key
    with torch.no_grad():
        logits = rep.behaviour_model(obs)
        expected = losses.sampled_softmax_loss(
            logits.gather(1, act_i[:, None])[:, 0], logits[:, negatives], act_i, negatives, 300
        )
    assert sampled["behaviour_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="negatives_K"):
        merlion_losses(rep, obs, act_i, rew, next_obs, act_j, sampled_config)


def test_sampled_behaviour_loss_trains_only_g_and_sparse_tables_give_sparse_gradients():
    config = MerlionConfig(dim=3, hidden=16, action_embed_dim=4, behaviour_loss="sampled", sparse_tables=True)
    rep = build(config, 50, 3)
    g = torch.Generator().manual_seed(2)
    obs, act = torch.randn(8, 3, generator=g), torch.randint(0, 50, (8,), generator=g)
    terms = merlion_losses(rep, obs, act, torch.randn(8), obs, act.flip(0), config, negatives_K=torch.arange(10))
    terms["behaviour_loss"].backward()
    for model, params in module_parameters(rep).items():
        has_grad = any(p.grad is not None for p in params)
        assert has_grad == (model == "behaviour_model"), model
    assert rep.behaviour_model.output.weight.grad.is_sparse
    rep.zero_grad(set_to_none=True)
    merlion_losses(rep, obs, act, torch.randn(8), obs, act.flip(0), config, negatives_K=torch.arange(10))[
        "encoder_loss"
    ].backward()
    assert rep.encoder.action_table.weight.grad.is_sparse


@pytest.mark.parametrize("sparse_tables", [False, True])
def test_fit_with_sampled_softmax_runs_and_learns_g(sparse_tables):
    """A few steps on a small maze-shaped dataset: finite losses; G's exact cross-entropy drops on
    data whose logged action is a function of the state."""
    dataset = synthetic_dataset(64, n=256, peaked=True)
    config = MerlionConfig(
        steps=150, batch_size=32, hidden=32, action_embed_dim=8, log_every=50, lr=1e-2,
        behaviour_loss="sampled", behaviour_samples=8, behaviour_chunk=10, sparse_tables=sparse_tables,
    )  # fmt: skip
    obs, act = torch.as_tensor(dataset.observations), torch.as_tensor(dataset.actions)
    before = losses.behaviour_loss(build(config, 64, 3).behaviour_model(obs), act).item()
    rep, metrics = fit(dataset, config, device="cpu")
    assert set(metrics) >= {"encoder_loss", "transition_loss", "reward_loss", "behaviour_loss", "ood_share"}
    assert all(math.isfinite(v) for v in metrics.values())
    with torch.no_grad():
        after = losses.behaviour_loss(rep.behaviour_model(obs), act).item()
    assert before > 3.5 and after < 1.0  # ln 64 = 4.16 at the start; two actions to learn


def test_sampled_encoder_only_steps_have_no_model_losses():
    dataset = synthetic_dataset(32)
    base = dict(steps=6, batch_size=16, hidden=16, action_embed_dim=4, log_every=3)
    rep = build(MerlionConfig(**base, behaviour_loss="sampled", behaviour_samples=4), 32, 3)
    steps = list(train_steps(rep, dataset, rep.config, device="cpu", train_models=False))
    assert [s for s, _ in steps] == [3, 6] and "behaviour_loss" not in steps[-1][1]


# ---------------------------------------------------------------- memory caps
def test_memory_caps_raise_the_named_error_before_allocating():
    with pytest.raises(
        MemoryCapError, match=r"action tables for 100 actions needs 155200 bytes .*max_table_bytes=1000"
    ):
        build(MerlionConfig(max_table_bytes=1000), 100, 3)
    small = dict(hidden=16, action_embed_dim=4, batch_size=128)
    # tables fit (100 x (4 + 65) x 16 bytes) but the full softmax's three [128, 100] blocks do not
    rep = build(MerlionConfig(**small, max_table_bytes=120_000), 100, 3)
    with pytest.raises(MemoryCapError, match=r"behaviour_loss='sampled'.*needs 153600 bytes.*max_table_bytes"):
        next(train_steps(rep, synthetic_dataset(100), rep.config, device="cpu"))
    with pytest.raises(MemoryCapError, match="embed_all of 64 states x 100 actions needs"):
        rep.embed_all(torch.zeros(64, 3))
    assert rep.embed_all(torch.zeros(2, 3), chunk=10).shape == (2, 100, 2)  # within the cap
    with pytest.raises(MemoryCapError, match="G's logits"):
        rep.relative_behaviour_probs(torch.zeros(200, 3))
    with pytest.raises(MemoryCapError, match="max_chunk_bytes=100 "):
        l1_nearest(torch.zeros(4, 2), representation=rep, obs_BS=torch.zeros(4, 3), chunk=10, max_chunk_bytes=100)
    with pytest.raises(MemoryCapError, match="max_chunk_bytes"):
        build_index(torch.zeros(100, 2), IndexConfig(max_chunk_bytes=10))
    with pytest.raises(ValueError, match="max_table_bytes"):
        MerlionConfig(max_table_bytes=-1)
    with pytest.raises(ValueError, match="behaviour_loss"):
        MerlionConfig(behaviour_loss="approx")


# ---------------------------------------------------------------- approximate lookup
class IntegerStateful(Representation):
    """e(a; s) = table[a] * (1 + s), integer-valued (exact arithmetic, many ties); obs_dim == dim."""

    def __init__(self, table_AD):
        super().__init__(table_AD.shape[0], table_AD.shape[1], table_AD.shape[1])
        self.register_buffer("table", table_AD)

    def embed(self, obs_BS, act_B):
        return self.table[act_B] * (1.0 + obs_BS)


def test_index_with_all_candidates_equals_the_exact_lookup():
    g = torch.Generator().manual_seed(3)
    rep = IntegerStateful(torch.randint(0, 3, (90, 2), generator=g).double())
    obs = torch.randint(0, 2, (11, 2), generator=g).double()
    query = torch.randint(0, 4, (11, 2), generator=g).double()
    keys = action_keys(rep, obs[:3], chunk=7)
    index = build_index(keys, IndexConfig(n_clusters=9, candidates=90, chunk=5))
    for k in (1, 4):
        exact = l1_nearest(query, representation=rep, obs_BS=obs, k=k, chunk=13)
        approx = query_index(index, rep, query, obs, k=k)
        assert torch.equal(approx[0], exact[0]) and torch.equal(approx[1], exact[1])
    merlion = build(MerlionConfig(dim=2, hidden=16, action_embed_dim=4), 200, 3)
    obs = torch.randn(16, 3, generator=g)
    query = merlion.embed(obs, torch.randint(0, 200, (16,), generator=g)).detach()
    full = build_index(action_keys(merlion, obs[:4]), IndexConfig(candidates=200))
    assert torch.equal(
        query_index(full, merlion, query, obs, k=3)[0], l1_nearest(query, representation=merlion, obs_BS=obs, k=3)[0]
    )


def test_index_answers_are_true_distances_never_better_than_exact():
    rep = build(MerlionConfig(dim=2, hidden=16, action_embed_dim=4), 500, 3)
    g = torch.Generator().manual_seed(4)
    obs = torch.randn(32, 3, generator=g)
    with torch.no_grad():
        query = rep.embed(obs, torch.randint(0, 500, (32,), generator=g)) + 0.05 * torch.randn(32, 2, generator=g)
        index = build_index(action_keys(rep, obs[:8]), IndexConfig(candidates=40))
        idx, dist = query_index(index, rep, query, obs, k=2)
        true = (query[:, None, :] - rep.embed_chunk(obs, torch.arange(500))).abs().sum(-1)
    assert torch.allclose(dist, true.gather(1, idx), atol=1e-5)
    exact_idx, exact_dist = l1_nearest(query, representation=rep, obs_BS=obs, k=2)
    assert (dist >= exact_dist - 1e-5).all() and bool((dist[:, 1:] >= dist[:, :1]).all())
    assert 0.0 <= recall_at_k(idx, exact_idx) <= 1.0
    with pytest.raises(ValueError, match="k must be"):
        query_index(index, rep, query, obs, k=41)


def test_recall_by_hand():
    approx = torch.tensor([[1, 2], [3, 4], [7, 8]])
    exact = torch.tensor([[2, 5], [4, 3], [0, 9]])
    assert recall_at_k(approx, exact) == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert recall_at_k(exact, exact) == 1.0
    with pytest.raises(ValueError, match="recall_at_k"):
        recall_at_k(approx, exact[:, :1])


def test_kmeans_finds_separated_blobs_and_is_seeded():
    g = torch.Generator().manual_seed(5)
    blobs = torch.cat([torch.randn(30, 2, generator=g) * 0.1 + c for c in (torch.tensor([5.0, 0]), torch.zeros(2))])
    centroids, assign = kmeans(blobs, 2, iters=5, seed=0, chunk=7)
    assert len(set(assign[:30].tolist())) == 1 and len(set(assign[30:].tolist())) == 1 and assign[0] != assign[30]
    assert torch.allclose(centroids[assign[0]], blobs[:30].mean(0), atol=1e-5)
    again = kmeans(blobs, 2, iters=5, seed=0, chunk=60)
    assert torch.equal(again[1], assign)
