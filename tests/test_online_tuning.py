"""Fine-tuning a MERLION representation online (issue 25, build item 3: "the encoder fixed or
fine-tuned"): one tuning step is one step of Algorithm 2's losses on a replay minibatch, the online
loop takes them only when asked, and the agent is saved with the encoder it acted with."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from latent_support import one_torch_thread  # noqa: F401  (shared fixture)

from merlion_core.algos.artifacts import load_agent
from merlion_core.algos.online import OnlineConfig
from merlion_core.data.sampler import Batch
from merlion_core.envs import make_model
from merlion_core.models.mlp import host_to_device
from merlion_core.representation import external, merlion
from merlion_core.representation.artifacts import load_representation, save_representation
from merlion_core.representation.online_tuning import ReplayTuner

SMALL_MAZE = {"n_actuators": 4}
TINY = {"env_steps": 96, "n_envs": 8, "warmup_steps": 32, "updates_per_step": 1, "batch_size": 16}
TINY_LEARNER = {"hidden": (16, 16), "fourier_features": 0}


def small_merlion(n_actions: int = 16, obs_dim: int = 3, **config) -> merlion.MerlionRepresentation:
    return merlion.build(merlion.MerlionConfig(hidden=16, action_embed_dim=8, **config), n_actions, obs_dim)


def batch(n: int = 8, obs_dim: int = 3, n_actions: int = 16, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(n, obs_dim, generator=g),
        act=torch.randint(0, n_actions, (n,), generator=g),
        rew=torch.randn(n, generator=g),
        next_obs=torch.randn(n, obs_dim, generator=g),
        done=torch.zeros(n),
    )


@pytest.mark.parametrize("behaviour_loss", ["full", "sampled"])
def test_one_tuning_step_is_one_step_of_algorithm_2_on_the_batch(behaviour_loss):
    """The tuner's step equals, by hand: a_j (and G's negatives) from its own seeded stream, the
    losses of Eq. 6 and Eq. 26 with the models trained, their sum minimised by one Adam step."""
    rep = small_merlion(behaviour_loss=behaviour_loss, behaviour_samples=5)
    by_hand = copy.deepcopy(rep)
    b = batch()
    tuner = ReplayTuner(rep, lr=0.01, seed=3)
    parts = tuner.step(b)

    g = torch.Generator().manual_seed(3)
    act_j = host_to_device(torch.randint(0, 16, (8,), generator=g), b.obs.device)
    negatives = torch.randint(0, 16, (5,), generator=g) if behaviour_loss == "sampled" else None
    terms = merlion.merlion_losses(by_hand, b.obs, b.act, b.rew, b.next_obs, act_j, by_hand.config, True, negatives)
    assert {"encoder_loss", "transition_loss", "reward_loss", "behaviour_loss"} <= set(terms)
    optimizer = torch.optim.Adam(by_hand.parameters(), lr=0.01)
    sum(v for k, v in terms.items() if k.endswith("_loss")).backward()
    optimizer.step()

    for key, value in terms.items():
        assert torch.allclose(parts["tune_" + key], value.detach(), atol=1e-6), key
    for (name, tuned), manual in zip(rep.state_dict().items(), by_hand.state_dict().values(), strict=True):
        assert torch.allclose(tuned, manual, atol=1e-6), name
    before = small_merlion(behaviour_loss=behaviour_loss, behaviour_samples=5).state_dict()
    assert any(not torch.equal(before[k], v) for k, v in rep.state_dict().items())  # it did move
    assert not rep.training  # left in eval mode, as the agent uses it


def test_only_merlion_representations_are_tuned():
    rep = external.build(external.ExternalConfig(env="maze"), 16, 3)
    with pytest.raises(ValueError, match="encoder_updates_per_step: .*MERLION representations only.*external"):
        ReplayTuner(rep, lr=0.01, seed=0)
    with pytest.raises(ValueError, match="encoder_updates_per_step, encoder_lr: must be >= 0"):
        OnlineConfig(encoder_updates_per_step=-1)


@pytest.fixture(scope="module")
def merlion_encoder(tmp_path_factory) -> Path:
    """An untrained MERLION encoder folder for the 16-action maze."""
    model = make_model("maze", SMALL_MAZE)
    rep = small_merlion(model.n_actions, model.obs_dim)
    out = tmp_path_factory.mktemp("tuning") / "encoder"
    save_representation(rep, "merlion", rep.config, out, info={"env_id": "merlion/Maze-v0"})
    return out


def train(encoder: Path, out: Path, **online) -> dict:
    from merlion_core.pipelines.online import train_online

    config = OnlineConfig(**TINY, eval_every=48, eval_episodes=2, learner=TINY_LEARNER, **online)
    train_online(None, encoder, out, config=config, env_overrides=SMALL_MAZE, device="cpu", precision="fp32")
    return json.loads((out / "config.json").read_text())


def test_a_tuned_agent_is_saved_and_loaded_with_its_tuned_encoder(merlion_encoder, tmp_path):
    fixed = train(merlion_encoder, tmp_path / "fixed")
    tuned = train(merlion_encoder, tmp_path / "tuned", encoder_updates_per_step=2, encoder_lr=0.01)
    assert fixed["encoder"] == str(merlion_encoder.resolve())
    assert not (tmp_path / "fixed" / "encoder").exists()
    assert tuned["encoder"] == str((tmp_path / "tuned" / "encoder").resolve())
    record = load_representation(tuned["encoder"]).info["fine_tuned_online"]
    # 96 env steps of 8 episodes = 12 vector steps; learning from the 4th (the warm-up's last): 9 x 2
    assert record == {"source": str(merlion_encoder.resolve()), "steps": 18, "lr": 0.01}

    source = load_representation(merlion_encoder).representation.state_dict()
    saved = load_representation(tuned["encoder"]).representation.state_dict()
    agent = load_agent(tmp_path / "tuned").agent
    assert all(torch.equal(agent.representation.state_dict()[k], v) for k, v in saved.items())
    assert any(not torch.equal(source[k], v) for k, v in saved.items())
    curve = json.loads((tmp_path / "tuned" / "metrics.json").read_text())["curve"]
    assert all(p["tune_encoder_loss"] > 0 and 0 <= p["tune_ood_share"] <= 1 for p in curve)
    fixed_curve = json.loads((tmp_path / "fixed" / "metrics.json").read_text())["curve"]
    assert not any(k.startswith("tune_") for k in fixed_curve[-1])


def test_the_tuning_stream_leaves_the_other_streams_as_they_were():
    """A fifth seed stream for the tuning: the env, warm-up, replay and exploration streams are the
    four of SeedSequence(seed).spawn(4), as before the option existed, so fixed-encoder runs repeat."""
    from merlion_core.algos.online import _seeds

    env, warmup, replay, explore, tune = _seeds(7)
    old = np.random.SeedSequence(7).spawn(4)
    assert (replay, explore) == tuple(int(ss.generate_state(1)[0]) for ss in old[2:])
    assert env.integers(0, 2**31, 4).tolist() == np.random.default_rng(old[0]).integers(0, 2**31, 4).tolist()
    assert warmup.integers(0, 2**31, 4).tolist() == np.random.default_rng(old[1]).integers(0, 2**31, 4).tolist()
    assert tune not in (replay, explore)


def test_a_fixed_encoder_run_leaves_phi_as_loaded(merlion_encoder, tmp_path):
    config = train(merlion_encoder, tmp_path / "a", encoder_updates_per_step=0, encoder_lr=0.5)
    assert config["encoder"] == str(merlion_encoder.resolve())
    source = load_representation(merlion_encoder).representation.state_dict()
    acted = load_agent(tmp_path / "a").agent.representation.state_dict()
    assert all(torch.equal(acted[k], v) for k, v in source.items())
