"""The six baseline action representations (paper 5.1): Rand-1, Rand-2, Transition, Reconstruction,
CVAE and External, behind the one Representation interface."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from merlion_core.config import field_docs, from_dict, to_dict
from merlion_core.data.collect import collect
from merlion_core.envs import make_model
from merlion_core.envs.multistep_maze import BASE_MOVES
from merlion_core.representation import cvae, external, random_embeddings, reconstruction, transition
from merlion_core.representation.base import Representation

N_ACTUATORS = 6
N_ACTIONS = 2**N_ACTUATORS
OBS_DIM = 3  # maze observation: (x, y, bonus_taken)

METHODS = {  # name -> (build, fit, small config)
    "rand1": (random_embeddings.build_rand1, random_embeddings.fit_rand1, random_embeddings.Rand1Config(dim=3, seed=1)),
    "rand2": (
        random_embeddings.build_rand2,
        random_embeddings.fit_rand2,
        random_embeddings.Rand2Config(min_distance=0.1, seed=1),
    ),
    "transition": (transition.build, transition.fit, transition.TransitionConfig(steps=300)),
    "reconstruction": (
        reconstruction.build,
        reconstruction.fit,
        reconstruction.ReconstructionConfig(steps=300, hidden=(64, 64), lr=3e-3),
    ),
    "cvae": (cvae.build, cvae.fit, cvae.CVAEConfig(steps=300, hidden=(64, 64), lr=3e-3)),
    "external": (external.build, external.fit, external.ExternalConfig()),
}
LEARNED = ("transition", "reconstruction", "cvae")
CONFIG_CLASSES = [
    random_embeddings.Rand1Config,
    random_embeddings.Rand2Config,
    transition.TransitionConfig,
    reconstruction.ReconstructionConfig,
    cvae.CVAEConfig,
    external.ExternalConfig,
]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny networks: one intra-op thread is faster and immune to a busy machine; restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    """Random-action data on the 64-action maze (the setting Chandak et al. train on)."""
    return collect("maze", "random", 1.0, 4000, seed=0, env_overrides={"n_actuators": N_ACTUATORS})


@pytest.fixture(scope="module")
def trained(data):
    cache = {}

    def get(name):
        if name not in cache:
            calls = []
            _, fit, config = METHODS[name]
            rep, metrics = fit(data, config, device="cpu", progress=lambda step, m: calls.append((step, dict(m))))
            cache[name] = (rep, metrics, calls)
        return cache[name]

    return get


def _config_of(rep, config):
    return getattr(rep, "config", config)  # external records its resolved env and dim


def _pairwise_l1_mean(table_AD, classes_A):
    dist = torch.cdist(table_AD.double(), table_AD.double(), p=1)
    same = classes_A[:, None] == classes_A[None, :]
    off_diag = ~torch.eye(len(classes_A), dtype=torch.bool)
    return float(dist[same & off_diag].mean()), float(dist[~same].mean())


# ---------------------------------------------------------------- the common interface


@pytest.mark.parametrize("name", list(METHODS))
def test_shapes_and_embed_all_equals_embed(name, data, trained):
    rep, metrics, calls = trained(name)
    assert isinstance(rep, Representation) and rep.n_actions == N_ACTIONS and rep.obs_dim == OBS_DIM
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert calls and calls[-1][0] == getattr(METHODS[name][2], "steps", 0)  # progress at the end
    obs = torch.as_tensor(data.observations[:5])
    d = rep.dim
    act = torch.as_tensor(data.actions[:5])
    assert rep.embed(obs, act).shape == (5, d)
    assert rep.embed_chunk(obs, torch.tensor([3, 1, 4])).shape == (5, 3, d)
    every = rep.embed_all(obs, chunk=7)  # 7 does not divide 64: the last chunk is short
    assert every.shape == (5, N_ACTIONS, d)
    pairs = rep.embed(obs.repeat_interleave(N_ACTIONS, 0), torch.arange(N_ACTIONS).repeat(5))
    torch.testing.assert_close(every, pairs.reshape(5, N_ACTIONS, d), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(METHODS))
def test_same_seed_same_weights_other_seed_differs(name, data):
    build, fit, config = METHODS[name]
    config = dataclasses.replace(config, steps=min(config.steps, 30))
    first, _ = fit(data, config, device="cpu")
    again, _ = fit(data, config, device="cpu")
    other, _ = fit(data, dataclasses.replace(config, seed=config.seed + 1), device="cpu")
    sd1, sd2, sd3 = first.state_dict(), again.state_dict(), other.state_dict()
    assert sd1.keys() == sd2.keys() and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    if name == "external":  # deterministic features: the seed plays no part
        assert all(torch.equal(sd1[k], sd3[k]) for k in sd1)
    else:
        assert any(not torch.equal(sd1[k], sd3[k]) for k in sd1)
    if name in LEARNED:  # build alone is reproducible too
        a, b = build(config, N_ACTIONS, OBS_DIM).state_dict(), build(config, N_ACTIONS, OBS_DIM).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_fitting_leaves_global_rng_alone(data):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    transition.fit(data, dataclasses.replace(METHODS["transition"][2], steps=5), device="cpu")
    reconstruction.build(METHODS["reconstruction"][2], N_ACTIONS, OBS_DIM)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("name", list(METHODS))
def test_save_and_load_state_dict(name, data, trained, tmp_path):
    build, _, config = METHODS[name]
    rep, _, _ = trained(name)
    path = tmp_path / f"{name}.pt"
    torch.save(rep.state_dict(), path)
    fresh = build(_config_of(rep, config), N_ACTIONS, OBS_DIM)
    obs = torch.as_tensor(data.observations[:8])
    if name in LEARNED:  # loading really changes something: weights and standardisation buffers
        assert not torch.allclose(fresh.embed_all(obs), rep.embed_all(obs))
    fresh.load_state_dict(torch.load(path, weights_only=True))
    with torch.no_grad():
        assert torch.equal(fresh.embed_all(obs), rep.embed_all(obs))


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_configs_are_documented_frozen_and_round_trip(cls):
    config = cls()
    fields = {f.name for f in dataclasses.fields(cls)}
    assert {"dim", "steps", "batch_size", "lr", "seed"} <= fields and "device" not in fields
    docs = field_docs(cls)
    assert set(docs) == fields and all(docs.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.dim = 5
    assert from_dict(cls, to_dict(config)) == config


# ---------------------------------------------------------------- Rand-1 and Rand-2


def test_rand1_uniform_in_the_box_and_state_independent():
    rep = random_embeddings.build_rand1(random_embeddings.Rand1Config(dim=3, seed=4), 4096, 2)
    table = rep.table
    assert table.shape == (4096, 3) and table.dtype == torch.float32
    assert float(table.min()) >= -1 and float(table.max()) <= 1
    assert float(table.min()) < -0.99 and float(table.max()) > 0.99  # spans the whole box
    assert abs(float(table.mean())) < 0.05 and abs(float(table.var()) - 1 / 3) < 0.03  # U(-1, 1)
    e = rep.embed_all(torch.rand(4, 2) * 10)
    assert torch.equal(e[0], e[3]) and torch.equal(e[0], table)


@pytest.mark.parametrize("n_actions, dim, margin", [(4096, 2, None), (4096, 2, 0.03), (500, 3, 0.2), (300, 16, 0.9)])
def test_rand2_every_pair_is_at_least_the_margin_apart(n_actions, dim, margin):
    config = random_embeddings.Rand2Config(dim=dim, seed=2)
    if margin is not None:
        config = dataclasses.replace(config, min_distance=margin)
    table = random_embeddings.build_rand2(config, n_actions, 2).table
    assert table.shape == (n_actions, dim)
    assert float(table.abs().max()) <= 1
    dist = torch.cdist(table, table, p=1)  # every pair at once
    dist.fill_diagonal_(float("inf"))
    assert float(dist.min()) >= config.min_distance
    assert len(torch.unique(table, dim=0)) == n_actions
    other = random_embeddings.build_rand2(dataclasses.replace(config, seed=3), n_actions, 2).table
    assert not torch.equal(table, other)


def test_rand2_infeasible_margin_raises():
    config = random_embeddings.Rand2Config(dim=2, min_distance=0.05)  # 64 cells per axis allow 0.03125
    with pytest.raises(ValueError, match="infeasible"):
        random_embeddings.build_rand2(config, 4096, 2)
    with pytest.raises(ValueError, match="min_distance"):
        random_embeddings.build_rand2(dataclasses.replace(config, min_distance=-1.0), 10, 2)


# ---------------------------------------------------------------- Transition (Chandak et al. 2019)


def test_transition_learns_inverse_dynamics(trained):
    rep, metrics, calls = trained("transition")
    assert [step for step, _ in calls] == [100, 200, 300]
    assert metrics["ce"] < math.log(N_ACTIONS) - 0.3  # clearly better than chance
    assert metrics["loss"] < calls[0][1]["loss"]
    table = rep.embed_all(torch.zeros(1, OBS_DIM))[0].detach()
    assert float(table.abs().max()) < 1  # tanh-squashed
    classes = torch.as_tensor(make_model("maze", {"n_actuators": N_ACTUATORS}).action_classes)
    same, different = _pairwise_l1_mean(table, classes)
    assert same < 0.5 * different  # equal displacement -> nearby embeddings


def test_transition_default_config_matches_public_code():
    config = transition.TransitionConfig()
    assert (config.dim, config.lr, config.emb_reg, config.kl_weight) == (2, 1e-2, 1e-2, 1e-2)
    rep = transition.build(config, 4096, 2)
    table = rep.embeddings.detach()
    assert table.shape == (4096, 2) and float(table.abs().max()) <= 1  # U(-1, 1)
    assert float(table.min()) < -0.99 and float(table.max()) > 0.99
    assert isinstance(rep.encoder, torch.nn.Linear)  # linear inverse-dynamics encoder


def test_transition_loss_matches_the_formula_on_a_hand_made_case():
    rep = transition.build(transition.TransitionConfig(), 3, 1)
    table = torch.tensor([[0.5, 0.0], [-0.5, 0.0], [0.0, 0.9]])
    mu = torch.tensor([math.atanh(0.5), 0.0])
    with torch.no_grad():
        rep.embeddings.copy_(torch.atanh(table))
        rep.encoder.weight.zero_()
        rep.encoder.bias.copy_(torch.cat([mu, torch.full((2,), -3.0)]))  # log sigma = -3
    noise = torch.tensor([[1.0, -2.0]])
    parts = rep.losses(torch.zeros(1, 1), torch.tensor([2]), torch.zeros(1, 1), noise, 0.01, 0.01)
    z = torch.tanh(mu + math.exp(-3.0) * noise[0])
    logits = -((z[None, :] - table) ** 2).sum(1)  # negative squared distances to every embedding
    ce = -torch.log_softmax(logits, 0)[2]
    kl = 0.5 * float((mu**2).sum() + 2 * (math.exp(-6.0) + 6 - 1))
    torch.testing.assert_close(parts["ce"], ce)
    torch.testing.assert_close(parts["kl"], torch.tensor(kl))
    expected = ce / math.log(3) + 0.01 * (table**2).mean() / 2 + 0.01 * kl
    torch.testing.assert_close(parts["loss"], expected)


# ---------------------------------------------------------------- Reconstruction and CVAE


def _fixed_batch(data, n=2000):
    return tuple(
        torch.as_tensor(x[:n]) for x in (data.observations, data.actions, data.rewards, data.next_observations)
    )


@pytest.mark.parametrize("name", ["reconstruction", "cvae"])
def test_training_loss_decreases_clearly(name, data, trained):
    _, fit, config = METHODS[name]
    rep, _, calls = trained(name)
    untrained, _ = fit(data, dataclasses.replace(config, steps=0), device="cpu")  # same init, statistics set
    batch = _fixed_batch(data)
    with torch.no_grad():
        before = untrained.losses(*batch)
        after = rep.losses(*batch)
    assert float(after["next_mse"]) < 0.6 * float(before["next_mse"])
    assert float(after["loss"]) < 0.7 * float(before["loss"])
    assert [step for step, _ in calls] == [100, 200, 300]
    classes = torch.as_tensor(make_model("maze", {"n_actuators": N_ACTUATORS}).action_classes)
    e = rep.embed_all(batch[0][:20]).detach()  # [20, A, dim]
    same, different = zip(*(_pairwise_l1_mean(e[i], classes) for i in range(len(e))), strict=True)
    assert np.mean(same) < 0.5 * np.mean(different)  # equal displacement -> nearby embeddings


def test_cvae_representation_is_the_deterministic_encoder_mean(trained, data):
    rep, metrics, _ = trained("cvae")
    assert cvae.CVAEConfig().beta > 0 and {"kl", "recon", "loss"} <= set(metrics)
    obs, act = _fixed_batch(data, 50)[:2]
    with torch.no_grad():
        mu, log_std = rep.posterior(obs, act)
    assert torch.equal(rep.embed(obs, act), mu) and torch.equal(rep.embed(obs, act), rep.embed(obs, act))
    assert float(log_std.min()) >= cvae.LOG_STD_MIN and float(log_std.max()) <= cvae.LOG_STD_MAX
    noise = torch.randn(50, rep.dim)
    batch = _fixed_batch(data, 50)
    with torch.no_grad():
        a, b = rep.losses(*batch, noise), rep.losses(*batch, None)
    assert not torch.equal(a["recon"], b["recon"])  # the sample, not the mean, is decoded in training
    torch.testing.assert_close(a["kl"], b["kl"])


@pytest.mark.parametrize("name", LEARNED)
def test_one_step_reaches_every_parameter(name, data):
    _, fit, config = METHODS[name]
    rep, _ = fit(data, dataclasses.replace(config, steps=0), device="cpu")
    obs, act, rew, nxt = _fixed_batch(data, 256)
    noise = torch.randn(256, rep.dim, generator=torch.Generator().manual_seed(0))
    if name == "transition":
        loss = rep.losses(obs, act, nxt, noise, config.emb_reg, config.kl_weight)["loss"]
    else:
        loss = rep.losses(obs, act, rew, nxt, noise if name == "cvae" else None)["loss"]
    loss.backward()
    params = dict(rep.named_parameters())
    assert params
    for pname, p in params.items():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, f"{name}: no gradient reaches {pname}"
    assert not any(b.requires_grad for b in rep.buffers())


# ---------------------------------------------------------------- External


def test_external_maze_features_are_the_normalised_displacements(data, trained):
    rep, _, _ = trained("external")
    assert rep.config.env == "merlion/Maze-v0" and rep.config.dim == 2 == rep.dim
    model = make_model("maze", {"n_actuators": N_ACTUATORS})
    disp = model.displacements / np.abs(model.displacements).max(axis=0)
    table = rep.embed_all(torch.as_tensor(data.observations[:3]))
    assert torch.equal(table[0], table[2])
    np.testing.assert_allclose(table[0].numpy(), disp, atol=1e-6)
    classes = torch.as_tensor(model.action_classes)
    same = classes[:, None] == classes[None, :]
    assert (same & ~torch.eye(N_ACTIONS, dtype=torch.bool)).any()
    dist = torch.cdist(table[0], table[0], p=1)
    assert float(dist[same].max()) == 0.0 and float(dist[~same].min()) > 0  # classes = identical rows
    raw = external.build(external.ExternalConfig(env="maze", normalise=False), N_ACTIONS, OBS_DIM).table
    np.testing.assert_allclose(raw.numpy(), model.displacements, atol=1e-6)


def test_external_full_maze_has_361_distinct_features():
    rep = external.build(external.ExternalConfig(env="merlion/Maze-v0"), 4096, 2)
    assert rep.table.shape == (4096, 2) and len(torch.unique(rep.table, dim=0)) == 361
    assert float(rep.table.abs().max()) == 1.0


def test_external_multistep_maze_is_twelve_dims_of_base_moves():
    config = external.ExternalConfig(env="multistep-maze", dim=2)
    rep = external.build(config, 4096, 3)
    assert rep.dim == 12 and rep.config.dim == 12 and rep.config.env == "merlion/MultiStepMaze-v0"
    moves = make_model("multistep-maze").moves
    expected = BASE_MOVES[moves].reshape(4096, 12)
    np.testing.assert_array_equal(rep.table.numpy(), expected.astype(np.float32))
    plan = int(np.flatnonzero((moves == [1, 1, 2, 0, 3, 3]).all(1))[0])  # right right up down left left
    assert rep.table[plan].tolist() == [1, 0, 1, 0, 0, 1, 0, -1, -1, 0, -1, 0]
    assert rep.embed_all(torch.zeros(2, 3), chunk=1000).shape == (2, 4096, 12)


def test_external_rejects_envs_without_features():
    with pytest.raises(ValueError, match="external: the dialogue env has no hand-made action features"):
        external.build(external.ExternalConfig(env="dialogue"), 1500, 10)
    with pytest.raises(ValueError, match="external: no hand-made features for nosuchenv"):
        external.build(external.ExternalConfig(env="nosuchenv"), 1500, 10)
    with pytest.raises(ValueError, match="not a valid action-set size"):
        external.build(external.ExternalConfig(env="maze"), 100, 2)
