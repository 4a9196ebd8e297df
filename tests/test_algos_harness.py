"""Offline RL algorithms: one harness over every registered algorithm, plus the paper's loss pieces by hand.

The harness is parametrised over ``ALGORITHMS``, so an algorithm added to the registry is covered
without touching this file.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from merlion_core.algos.base import OfflineAlgorithm, double_dqn_target, masked_argmax
from merlion_core.algos.bc import BCConfig
from merlion_core.algos.discrete_bcq import DiscreteBCQConfig, bcq_allowed
from merlion_core.algos.discrete_cql import DiscreteCQLConfig, cql_regulariser
from merlion_core.algos.registry import ALGORITHMS, LATENT_ALGORITHMS, make_algorithm
from merlion_core.config import field_docs
from merlion_core.data.collect import collect
from merlion_core.data.dataset import TransitionDataset
from merlion_core.data.sampler import Batch, BatchSampler
from merlion_core.envs import make_model

NAMES = sorted(ALGORITHMS)
ENV_OVERRIDES = {"n_actuators": 6}  # 64 actions


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def dataset() -> TransitionDataset:
    return collect("maze", "medium", 0.5, 5000, seed=0, env_overrides=ENV_OVERRIDES)


def small(name: str, **overrides):
    """The algorithm's default config with small hidden layers (fast tests), plus ``overrides``."""
    config_cls, _ = ALGORITHMS[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    kwargs: dict[str, tuple[int, int]] = {
        name: (32, 32) for name in ("hidden", "hidden_vae", "hidden_actor", "hidden_critic") if name in fields
    }
    if "action_factors" in fields:  # DecQN: the maze's declared factorisation
        kwargs["action_factors"] = make_model("maze", ENV_OVERRIDES).action_factors
    return config_cls(**{**kwargs, **overrides})


_REPRESENTATIONS: dict[int, object] = {}


def representation_for(dataset: TransitionDataset):
    """The maze's External representation (true movement vectors), for latent algorithms."""
    if id(dataset) not in _REPRESENTATIONS:
        from merlion_core.representation import external

        rep, _ = external.fit(dataset, external.ExternalConfig(env="merlion/Maze-v0"), device="cpu")
        _REPRESENTATIONS[id(dataset)] = rep
    return _REPRESENTATIONS[id(dataset)]


def build(name: str, dataset: TransitionDataset, **overrides) -> OfflineAlgorithm:
    rep = representation_for(dataset) if name in LATENT_ALGORITHMS else None
    return make_algorithm(
        name, dataset.n_actions, dataset.obs_dim, small(name, **overrides), device="cpu", representation=rep
    )


def trainable(algo: OfflineAlgorithm) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in algo.named_parameters() if p.requires_grad}


def run_updates(algo: OfflineAlgorithm, dataset: TransitionDataset, steps: int, seed: int = 0) -> list[dict]:
    sampler = BatchSampler(dataset, 32, seed=seed)
    return [algo.update(sampler.sample()) for _ in range(steps)]


# --- sampler ----------------------------------------------------------------------------------------


def test_sampler_batches_shapes_dtypes_and_rows(dataset: TransitionDataset) -> None:
    sampler = BatchSampler(dataset, 50, seed=3)
    batch = sampler.sample()
    assert isinstance(batch, Batch)
    assert batch.obs.shape == (50, dataset.obs_dim) and batch.obs.dtype == torch.float32
    assert batch.next_obs.shape == (50, dataset.obs_dim) and batch.next_obs.dtype == torch.float32
    assert batch.act.shape == (50,) and batch.act.dtype == torch.int64
    assert batch.rew.shape == (50,) and batch.done.shape == (50,) and batch.done.dtype == torch.float32
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.obs = batch.next_obs  # type: ignore[misc]
    # every sampled row is a dataset row, fields kept together
    rows = {
        tuple(r)
        for r in np.concatenate(
            [dataset.observations, dataset.actions[:, None], dataset.rewards[:, None], dataset.next_observations], 1
        )
    }
    got = torch.cat([batch.obs, batch.act[:, None].float(), batch.rew[:, None], batch.next_obs], 1).numpy()
    assert all(tuple(r) in rows for r in got)


def test_sampler_done_is_terminals_only_and_seeded():
    n = 40
    obs = np.arange(n, dtype=np.float32)[:, None]
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    terminals[9], timeouts[19], terminals[29], timeouts[39] = True, True, True, True
    ds = TransitionDataset(obs, np.zeros(n, np.int64), np.zeros(n, np.float32), obs + 1, terminals, timeouts, 2)
    a, b = BatchSampler(ds, 500, seed=7), BatchSampler(ds, 500, seed=7)
    batch = a.sample()
    assert torch.equal(batch.obs, b.sample().obs)  # same seed, same batches
    idx = batch.obs[:, 0].long()
    assert torch.equal(batch.done, torch.from_numpy(terminals.astype(np.float32))[idx])
    assert {9, 19, 29, 39} <= set(idx.tolist())  # uniform over all 40 rows: 500 draws hit these
    assert not torch.equal(batch.obs, BatchSampler(ds, 500, seed=8).sample().obs)
    assert not torch.equal(batch.obs, a.sample().obs)  # the stream moves on


# --- registry ---------------------------------------------------------------------------------------


def test_make_algorithm_unknown_name_lists_known():
    with pytest.raises(ValueError, match="known: " + ", ".join(ALGORITHMS)):
        make_algorithm("nope", 4, 3)


def test_make_algorithm_config_types():
    algo = make_algorithm("dcql", 4, 3, {"alpha": 0.3, "hidden": [8]}, device="cpu")
    assert algo.config == DiscreteCQLConfig(alpha=0.3, hidden=(8,))
    with pytest.raises(TypeError, match="DiscreteCQLConfig"):
        make_algorithm("dcql", 4, 3, BCConfig(), device="cpu")


def test_paper_defaults():
    assert DiscreteCQLConfig().alpha == 0.5 and DiscreteCQLConfig().gamma == 0.99
    bcq = DiscreteBCQConfig()
    assert (bcq.threshold, bcq.lr, bcq.gamma, bcq.tau, bcq.batch_size, bcq.logit_reg) == (
        0.3,
        3e-4,
        0.99,
        0.005,
        64,
        1e-2,
    )


# --- the harness: every registered algorithm -----------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_config_conventions(name):
    config_cls, algo_cls = ALGORITHMS[name]
    assert issubclass(algo_cls, OfflineAlgorithm)
    assert dataclasses.is_dataclass(config_cls) and config_cls.__dataclass_params__.frozen
    config = config_cls()  # every field has a default
    docs = field_docs(config_cls)
    for field in dataclasses.fields(config_cls):
        assert docs.get(field.name), f"{config_cls.__name__}.{field.name} has no docstring"
    for field in ("seed", "batch_size"):
        assert hasattr(config, field), f"{config_cls.__name__} lacks {field}"
    lrs = [f.name for f in dataclasses.fields(config_cls) if f.name == "lr" or f.name.endswith("_lr")]
    assert lrs and all(getattr(config, f) > 0 for f in lrs), f"{config_cls.__name__} has no learning rate"


@pytest.mark.parametrize("name", NAMES)
def test_losses_finite_and_every_parameter_moves(name, dataset):
    algo = build(name, dataset)
    before = trainable(algo)
    assert before, "no trainable parameters"
    metrics = run_updates(algo, dataset, 20)
    assert all("loss" in m for m in metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for m in metrics for v in m.values())
    after = trainable(algo)
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"parameters never updated: {unchanged}"
    assert all(torch.isfinite(p).all() for p in after.values())


@pytest.mark.parametrize("name", NAMES)
def test_act_returns_int64_ids_in_range(name, dataset):
    algo = build(name, dataset)
    run_updates(algo, dataset, 5)
    for b in (1, 17):
        actions = algo.act(dataset.observations[:b])
        assert isinstance(actions, np.ndarray) and actions.dtype == np.int64 and actions.shape == (b,)
        assert ((actions >= 0) & (actions < dataset.n_actions)).all()
    assert not any(p.grad is not None and p.grad.requires_grad for p in algo.parameters())
    with pytest.raises(ValueError, match="obs"):
        algo.act(dataset.observations[:3, :-1])


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip_gives_identical_actions(name, dataset, tmp_path):
    algo = build(name, dataset)
    run_updates(algo, dataset, 10)
    path = tmp_path / f"{name}.pt"
    torch.save(algo.state_dict(), path)
    fresh = build(name, dataset, seed=123)  # different init: the load must overwrite everything
    fresh.load_state_dict(torch.load(path, weights_only=True))
    obs = dataset.observations[:500]
    np.testing.assert_array_equal(fresh.act(obs), algo.act(obs))
    for (k, a), (_, b) in zip(algo.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("name", NAMES)
def test_optimizer_is_built_on_first_update_over_every_trainable_parameter(name, dataset):
    """An agent that only acts (loaded in the app, ``merlion evaluate``) builds no optimizer: the
    first one of a process imports torch._dynamo, seconds of the app's first paint."""
    algo = build(name, dataset)
    assert algo._optimizer is None
    run_updates(algo, dataset, 1)
    optimized = {id(p) for group in algo.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in algo.parameters() if p.requires_grad}
    assert algo.optimizer is algo.optimizer  # built once
    loaded = build(name, dataset, seed=1)
    loaded.load_state_dict(algo.state_dict())
    loaded.act(dataset.observations[:8])
    assert loaded._optimizer is None


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_parameters(name, dataset):
    torch.manual_seed(999)
    a = build(name, dataset)
    run_updates(a, dataset, 8, seed=4)
    torch.manual_seed(5)  # the global RNG must not matter
    b = build(name, dataset)
    run_updates(b, dataset, 8, seed=4)
    for (k, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), k
    c = build(name, dataset, seed=1)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


@pytest.mark.parametrize("name", NAMES)
def test_building_leaves_global_rng_alone(name, dataset):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build(name, dataset)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", NAMES)
def test_train_steps_reports_window_means(name, dataset):
    algo = build(name, dataset)
    reports = list(algo.train_steps(BatchSampler(dataset, 16, seed=0), steps=10, log_every=4))
    assert [step for step, _ in reports] == [4, 8, 10]
    assert all(math.isfinite(m["loss"]) for _, m in reports)
    # the window mean equals the mean of the individual updates
    twin = build(name, dataset)
    sampler = BatchSampler(dataset, 16, seed=0)
    twin.prepare_observation_features(sampler.observations)  # what train_steps does first
    twin.prepare_data(sampler)
    losses = [twin.update(sampler.sample())["loss"] for _ in range(4)]
    assert reports[0][1]["loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert list(algo.train_steps(sampler, steps=0)) == []


# --- Discrete CQL by hand ----------------------------------------------------------------------------


def test_cql_regulariser_by_hand():
    q = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    act = torch.tensor([2, 1])
    expected = ((math.log(math.e + math.e**2 + math.e**3) - 3.0) + (math.log(3.0) - 0.0)) / 2
    assert cql_regulariser(q, act).item() == pytest.approx(expected, rel=1e-6)
    # the gradient is softmax(Q) - onehot(a_data), averaged over states
    q.requires_grad_(True)
    cql_regulariser(q, act).backward()
    expected_grad = (torch.softmax(q.detach(), 1) - F.one_hot(act, 3)) / 2
    torch.testing.assert_close(q.grad, expected_grad)


def test_double_dqn_target_by_hand():
    q_online = torch.tensor([[0.0, 5.0, 1.0], [2.0, 0.0, 1.0]])
    q_target = torch.tensor([[9.0, 1.0, 3.0], [4.0, 7.0, 8.0]])  # its own max differs: must not be used
    rew, done = torch.tensor([1.0, -1.0]), torch.tensor([0.0, 1.0])
    y = double_dqn_target(q_online, q_target, rew, done, gamma=0.9)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * 1.0, -1.0]))
    allowed = torch.tensor([[True, False, True], [True, True, True]])
    y = double_dqn_target(q_online, q_target, rew, torch.zeros(2), 0.5, allowed)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.5 * 3.0, -1.0 + 0.5 * 4.0]))


def test_dcql_loss_is_td_plus_alpha_cql(dataset):
    algo = build("dcql", dataset, alpha=0.7)
    batch = BatchSampler(dataset, 64, seed=0).sample()
    parts = algo.losses(batch)
    q = algo.q(batch.obs)
    td = F.smooth_l1_loss(q.gather(1, batch.act[:, None]).squeeze(1), algo.td_target(batch))
    torch.testing.assert_close(parts["td_loss"], td)
    torch.testing.assert_close(parts["cql_loss"], cql_regulariser(q, batch.act))
    torch.testing.assert_close(parts["loss"], td + 0.7 * cql_regulariser(q, batch.act))


def test_dcql_is_conservative_towards_the_logged_action():
    """Zero reward everywhere, one logged action: only the CQL term separates actions, so the greedy
    action must become the logged one (a sign error would avoid it)."""
    rng = np.random.default_rng(0)
    n, logged = 256, 3
    obs = rng.normal(size=(n, 2)).astype(np.float32)
    terminals = np.zeros(n, bool)
    terminals[::8] = True
    ds = TransitionDataset(
        obs,
        np.full(n, logged, np.int64),
        np.zeros(n, np.float32),
        rng.normal(size=(n, 2)).astype(np.float32),
        terminals,
        np.zeros(n, bool),
        8,
    )
    algo = make_algorithm("dcql", 8, 2, small("dcql", lr=1e-3), device="cpu")
    assert (algo.act(obs) != logged).any()  # not already there at init
    for _ in algo.train_steps(BatchSampler(ds, 64, seed=0), steps=150, log_every=150):
        pass
    assert (algo.act(obs) == logged).all()


def test_dcql_target_network_is_polyak_averaged(dataset):
    algo = build("dcql", dataset, tau=0.25)
    old_target = [p.clone() for p in algo.q_target.parameters()]
    run_updates(algo, dataset, 1)
    for t_old, t_new, p in zip(old_target, algo.q_target.parameters(), algo.q.parameters(), strict=True):
        torch.testing.assert_close(t_new, 0.75 * t_old + 0.25 * p.detach())
    assert not any(p.requires_grad for p in algo.q_target.parameters())


# --- Discrete BCQ by hand ----------------------------------------------------------------------------


def test_bcq_mask_by_hand():
    probs = torch.tensor([[1.0, 0.5, 0.2]]) / 1.7  # relative probs 1, 0.5, 0.2
    allowed = bcq_allowed(probs.log(), 0.3)
    assert allowed.tolist() == [[True, True, False]]
    assert bcq_allowed(probs.log(), 0.6).tolist() == [[True, False, False]]
    assert bcq_allowed(probs.log(), 0.0).all()
    # the boundary: relative prob == threshold is masked (exactly representable powers of 2)
    halves = torch.tensor([[0.0, math.log(0.5), math.log(0.25)]])
    assert bcq_allowed(halves, 0.5).tolist() == [[True, False, False]]
    assert bcq_allowed(halves, 0.25).tolist() == [[True, True, False]]
    # invariant to the normalisation: raw logits give the same mask as log-probabilities
    logits = torch.randn(5, 7)
    assert torch.equal(bcq_allowed(logits, 0.3), bcq_allowed(F.log_softmax(logits, 1), 0.3))
    assert masked_argmax(torch.tensor([[0.0, 1.0, 5.0]]), allowed).tolist() == [1]


def _set_head(head: torch.nn.Sequential, bias: torch.Tensor) -> None:
    """Make an MLP head output ``bias`` at every state."""
    last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(bias)


def test_bcq_masks_when_acting_and_in_the_target(dataset):
    algo = build("dbcq", dataset, threshold=0.3, gamma=0.5)
    n_actions = dataset.n_actions
    q_online = torch.zeros(n_actions)
    q_online[5], q_online[2] = 10.0, 4.0  # best Q on action 5, which imitation forbids
    imitation = torch.full((n_actions,), -10.0)
    imitation[0], imitation[2] = 0.0, math.log(0.5)  # allowed: 0 (relative prob 1) and 2 (0.5)
    q_target = torch.arange(n_actions, dtype=torch.float32)
    _set_head(algo.net.q, q_online)
    _set_head(algo.net.imitation, imitation)
    _set_head(algo.net_target.q, q_target)
    obs = dataset.observations[:20]
    assert (algo.act(obs) == 2).all()
    batch = BatchSampler(dataset, 16, seed=0).sample()
    expected = batch.rew + 0.5 * (1.0 - batch.done) * q_target[2]
    torch.testing.assert_close(algo.td_target(batch), expected)


def test_dbcq_loss_parts(dataset):
    algo = build("dbcq", dataset)
    batch = BatchSampler(dataset, 64, seed=0).sample()
    parts = algo.losses(batch)
    q, logits = algo.net(batch.obs)
    td = F.smooth_l1_loss(q.gather(1, batch.act[:, None]).squeeze(1), algo.td_target(batch))
    nll = F.cross_entropy(logits, batch.act)
    torch.testing.assert_close(parts["loss"], td + nll + 1e-2 * logits.pow(2).mean())


# --- learning: BC imitates the expert -----------------------------------------------------------------


def test_bc_learns_the_expert_up_to_equivalence():
    expert = collect("maze", "expert", 0.0, 3000, seed=0, env_overrides=ENV_OVERRIDES)
    classes = np.asarray(make_model("maze", ENV_OVERRIDES).action_classes)
    algo = make_algorithm("bc", expert.n_actions, expert.obs_dim, device="cpu")
    sampler = BatchSampler(expert, algo.config.batch_size, seed=0)
    for _ in algo.train_steps(sampler, steps=500, log_every=500):
        pass
    chosen = algo.act(expert.observations)
    agreement = float((classes[chosen] == classes[expert.actions]).mean())
    assert agreement > 0.6, agreement
