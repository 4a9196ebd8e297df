"""Online RL on a fixed action representation (paper A.6 / Fig. 7): the config, the replay buffer,
the interaction loop (executed actions stored, episodes restarted, the latent map fitted on every
action), seeded runs, the CLI command, the job kind, the Runs page's labels, and (slow) learning."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from latent_support import one_torch_thread  # noqa: F401  (shared fixture)

from merlion_core.algos.latent_cql import LatentCQL
from merlion_core.algos.online import (
    ONLINE_LEARNER_DEFAULTS,
    OnlineConfig,
    ReplayBuffer,
    fit_latent_map,
    interact,
    learner_config,
    online_config,
    vector_steps,
)
from merlion_core.config import field_docs
from merlion_core.envs import make_model
from merlion_core.representation import external
from merlion_core.representation.artifacts import save_representation
from merlion_core.representation.random_embeddings import TableRepresentation

SMALL_MAZE = {"n_actuators": 4}
TINY = {"env_steps": 96, "n_envs": 8, "warmup_steps": 32, "updates_per_step": 1, "batch_size": 16}
TINY_LEARNER = {"hidden": (16, 16), "fourier_features": 0}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory) -> Path:
    """An External (movement vector) encoder folder for the 16-action maze (nothing trained)."""
    model = make_model("maze", SMALL_MAZE)
    rep = external.build(external.ExternalConfig(env="maze"), model.n_actions, model.obs_dim)
    out = tmp_path_factory.mktemp("online") / "encoder"
    save_representation(rep, "external", rep.config, out, info={"env_id": "merlion/Maze-v0"})
    return out


def table_agent(n_actions: int = 16, seed: int = 0, **online) -> tuple[LatentCQL, torch.Tensor]:
    table = torch.randn(n_actions, 2, generator=torch.Generator().manual_seed(seed))
    config = OnlineConfig(**{**TINY, **online, "learner": TINY_LEARNER})
    rep = TableRepresentation("table", table, 3)
    return LatentCQL(learner_config(config), n_actions, 3, "cpu", representation=rep), table


def test_config_fields_documented_and_learner_is_online_sac():
    docs = field_docs(OnlineConfig)
    assert all(docs.get(name) for name in OnlineConfig.__dataclass_fields__), docs
    learner = learner_config(OnlineConfig(batch_size=32, seed=7, learner={"gamma": 0.9}))
    assert (learner.alpha, learner.bc_steps, learner.backup_entropy) == (0.0, 0, True)
    assert (learner.batch_size, learner.seed, learner.gamma, learner.policy_lr) == (32, 7, 0.9, 1e-4)
    assert {k: getattr(learner, k) for k in ONLINE_LEARNER_DEFAULTS} == ONLINE_LEARNER_DEFAULTS
    for bad, match in (
        ({"warmup_steps": 200, "env_steps": 100}, "warmup_steps"),
        ({"replay_size": 4, "n_envs": 8}, "replay_size"),
        ({"updates_per_step": 0}, "updates_per_step"),
        ({"learner": {"seed": 3}}, "online run's own"),
        ({"learner": {"no_such": 1}}, "no_such"),
        ({"learner": {"gamma": 2.0}}, "gamma"),
    ):
        with pytest.raises(ValueError, match=match):
            OnlineConfig(**bad)


def test_flat_options_route_to_the_run_or_the_learner():
    config = online_config({"env_steps": 5000, "batch_size": 32, "gamma": 0.9, "learner": {"tau": 0.01}})
    assert (config.env_steps, config.batch_size, config.learner) == (5000, 32, {"tau": 0.01, "gamma": 0.9})
    with pytest.raises(ValueError, match="nonsense"):
        online_config({"nonsense": 1})
    assert (vector_steps(96, 8), vector_steps(97, 8), vector_steps(1, 8)) == (12, 13, 1)


def test_replay_buffer_wraps_around_and_samples_only_filled_rows():
    buffer = ReplayBuffer(5, 1, batch_size=400, seed=0)

    def add(ids):
        ids = np.asarray(ids, dtype=np.float32)
        buffer.add(ids[:, None], ids.astype(np.int64), 10 * ids, ids[:, None] + 0.5, ids % 2 == 1)

    add([0, 1, 2])
    assert (buffer.n, buffer.ptr) == (3, 3)
    batch = buffer.sample()
    assert set(batch.act.tolist()) == {0, 1, 2}  # never an empty row (those hold action 0 and zeros)
    add([3, 4, 5, 6])  # rows 3, 4, then round to rows 0, 1; row 2 keeps transition 2
    assert (buffer.n, buffer.ptr) == (5, 2)
    assert buffer.actions.tolist() == [5, 6, 2, 3, 4]
    assert buffer.observations[:, 0].tolist() == [5.0, 6.0, 2.0, 3.0, 4.0]
    batch = buffer.sample()
    assert set(batch.act.tolist()) == {2, 3, 4, 5, 6}
    ids = batch.act.float()
    assert torch.equal(batch.obs[:, 0], ids) and torch.equal(batch.rew, 10 * ids)  # rows stay whole
    assert torch.equal(batch.next_obs[:, 0], ids + 0.5) and torch.equal(batch.done, ids % 2)
    with pytest.raises(ValueError, match="capacity"):
        add(list(range(6)))
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(5, 1, 4).sample()


def test_latent_map_is_fitted_on_every_action_at_the_states():
    agent, table = table_agent()
    obs = torch.rand(10, 3)
    fit_latent_map(agent, obs)
    low, high = table.min(0).values, table.max(0).values  # the whole action set, not a sample of it
    assert torch.allclose(agent.latent_center, (high + low) / 2)
    assert torch.allclose(agent.latent_scale, 1.1 * (high - low) / 2)
    with pytest.raises(ValueError, match="states"):
        fit_latent_map(agent, torch.zeros(0, 3))


class Recorder:
    """A batch model that records every step's inputs and result."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self.n_actions, self.obs_dim, self.max_steps = model.n_actions, model.obs_dim, model.max_steps

    def initial_states(self, n, rng=None):
        return self.model.initial_states(n, rng)

    def step(self, states, actions, rng):
        result = self.model.step(states, actions, rng)
        self.calls.append((states.copy(), np.asarray(actions).copy(), result))
        return result


def test_replay_stores_the_executed_action_and_episodes_restart():
    # half the chosen actions are replaced by the env's noise; 3-step episodes cannot reach the goal
    model = Recorder(make_model("maze", {**SMALL_MAZE, "action_noise": 0.5, "max_steps": 3}))
    agent, _ = table_agent()
    replay = ReplayBuffer(1000, 3, 16, seed=0)
    steps = list(interact(agent, model, OnlineConfig(**TINY, learner=TINY_LEARNER), replay))
    assert [s.env_steps for s in steps] == [8 * (t + 1) for t in range(12)]
    assert [s.updates for s in steps] == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]  # learning from the 4th step
    assert [len(s.episode_returns) for s in steps] == [0, 0, 8] * 4  # every episode times out at step 3
    executed = np.concatenate([c[2].executed_actions for c in model.calls])
    chosen = np.concatenate([c[1] for c in model.calls])
    assert replay.n == 96 and np.array_equal(replay.actions.numpy(), executed)
    assert (executed != chosen).sum() > 10  # so storing the chosen action would fail the line above
    assert np.array_equal(replay.observations.numpy(), np.concatenate([c[0] for c in model.calls]))
    assert replay._done.sum() == 0  # time limits are truncations: the targets bootstrap
    starts = replay.observations.numpy()[np.arange(96).reshape(12, 8)[::3].ravel()]
    assert np.allclose(starts[:, :2], model.model.config.start)  # each episode's first state is a fresh start
    returns = np.concatenate([s.episode_returns for s in steps[2::3]])
    rewards = np.stack([c[2].rewards for c in model.calls]).reshape(4, 3, 8).sum(1).ravel()
    assert np.allclose(returns, rewards)


def test_interact_rejects_an_env_of_another_action_set():
    agent, _ = table_agent()
    with pytest.raises(ValueError, match="64 actions"):
        next(interact(agent, make_model("maze", {"n_actuators": 6}), OnlineConfig(**TINY)))


def run(encoder: Path, out: Path, seed: int) -> dict:
    from merlion_core.pipelines.online import train_online

    config = OnlineConfig(**TINY, eval_every=48, eval_episodes=2, seed=seed, learner=TINY_LEARNER)
    train_online(None, encoder, out, config=config, env_overrides=SMALL_MAZE, device="cpu", precision="fp32")
    return json.loads((out / "metrics.json").read_text())


def test_same_seed_gives_the_same_curve(encoder, tmp_path):
    first, again, other = (
        run(encoder, tmp_path / "a", 0),
        run(encoder, tmp_path / "b", 0),
        run(encoder, tmp_path / "c", 1),
    )
    assert [p["step"] for p in first["curve"]] == [48, 96]
    keys = ("mean_return", "critic_loss", "q_data", "train_return", "updates")
    assert [[p[k] for k in keys] for p in first["curve"]] == [[p[k] for k in keys] for p in again["curve"]]
    assert [p["critic_loss"] for p in first["curve"]] != [p["critic_loss"] for p in other["curve"]]
    weights = [torch.load(tmp_path / name / "weights.pt", weights_only=True) for name in ("a", "b")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_mismatched_env_is_a_one_line_error(encoder, tmp_path):
    from merlion_core.pipelines.online import train_online

    with pytest.raises(ValueError, match="16 actions.*--env-config"):
        train_online("maze", encoder, tmp_path / "agent", config=OnlineConfig(**TINY), device="cpu")


def test_cli_train_online_then_evaluate(tmp_path, capsys):
    from merlion_core.cli.main import main

    env_config = json.dumps(SMALL_MAZE)
    assert (
        main(
            [
                "collect",
                "--env",
                "maze",
                "--env-config",
                env_config,
                "--n",
                "200",
                "--out",
                str(tmp_path / "d"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train-encoder",
                "--dataset",
                str(tmp_path / "d"),
                "--method",
                "external",
                "--out",
                str(tmp_path / "e"),
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    argv = [
        "train-online",
        "--encoder",
        str(tmp_path / "e"),
        "--out",
        str(tmp_path / "agent"),
        "--env-config",
        env_config,
    ]
    argv += ["--env-steps", "64", "--n-envs", "8", "--warmup-steps", "32", "--batch-size", "16", "--eval-every", "32"]
    argv += [
        "--eval-episodes",
        "2",
        "--updates-per-step",
        "1",
        "--gamma",
        "0.9",
        "--device",
        "cpu",
        "--quiet",
        "--json",
    ]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["mode"], result["env_steps"], result["updates"]) == ("online", 64, 5)
    document = json.loads((tmp_path / "agent" / "config.json").read_text())
    assert (document["mode"], document["env_id"], document["env_overrides"]) == (
        "online",
        "merlion/Maze-v0",
        SMALL_MAZE,
    )
    assert document["encoder"] == os.path.abspath(tmp_path / "e") and document["precision"] in ("fp32", "bf16")
    assert (document["config"]["gamma"], document["config"]["alpha"], document["online"]["env_steps"]) == (0.9, 0.0, 64)
    curve = json.loads((tmp_path / "agent" / "metrics.json").read_text())["curve"]
    assert [p["step"] for p in curve] == [32, 64] and curve[-1]["updates"] == 5
    assert main(["evaluate", "--agent", str(tmp_path / "agent"), "--episodes", "3", "--quiet", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert (evaluated["algo"], evaluated["env_id"], evaluated["n_episodes"]) == ("cql", "merlion/Maze-v0", 3)
    assert (
        main(argv[:-2] + ["--env", "maze"]) == 0
        and main(argv[:3] + ["--out", str(tmp_path / "x"), "--env", "nowhere"]) == 1
    )


def test_job_kind_runs_through_run_job(encoder, tmp_path):
    from merlion_core.jobs.runner import run_job
    from merlion_core.jobs.spec import GPU_KINDS, TORCH_KINDS, JobSpec, validate

    options = {**TINY, "eval_every": 48, "eval_episodes": 2, "hidden": [16, 16]}
    config = {"encoder": str(encoder), "env_config": SMALL_MAZE, "options": options}
    assert "train-online" in TORCH_KINDS and "train-online" in GPU_KINDS
    spec = validate(JobSpec("train-online", config, 3))
    for bad, match in (({"env_steps": 0}, "env_steps"), ({"seed": 1}, "seed"), ({"nonsense": 1}, "nonsense")):
        with pytest.raises(ValueError, match=match):
            validate(JobSpec("train-online", {**config, "options": {**options, **bad}}, 0))
    calls = []
    result = run_job(
        "train-online", spec.config, 3, tmp_path / "art", lambda *a, **k: calls.append((a, k)), checkpoint_dir=tmp_path
    )
    assert calls[0] == ((0, {}), {"total": 96})
    counters = [a[0] for a, _ in calls if len(a) == 2 and isinstance(a[1], int)]
    points = [a for a, _ in calls if len(a) == 2 and isinstance(a[1], dict) and a[1]]
    assert counters[-1] == 96 and counters == sorted(counters)
    assert [a[0] for a in points] == [48, 96] and all(a[1]["step"] == a[0] for a in points)
    assert all(isinstance(v, (int, float)) for _, point in points for v in point.values())
    assert (result["mode"], result["env_steps"], Path(result["agent"])) == ("online", 96, tmp_path / "art" / "agent")
    assert json.loads((tmp_path / "art" / "agent" / "config.json").read_text())["config"]["seed"] == 3


def test_runs_page_labels_online_runs():
    import dataclasses

    from merlion_core.jobs.store import JobRecord
    from studio import curves, jobs_client

    def record(kind: str, config: dict, status: str = "running") -> JobRecord:
        blank: dict[str, Any] = {f.name: None for f in dataclasses.fields(JobRecord)}
        return JobRecord(**{**blank, "id": 5, "kind": kind, "config": config, "seed": 2, "status": status, "step": 640})

    online = record(
        "train-online", {"encoder": "/r/jobs/4/artifacts/encoder", "env": "maze", "options": {"eval_every": 1000}}
    )
    offline = record("train-agent", {"algo": "cql", "steps": 20, "eval_every": 10})
    assert jobs_client.describe(online) == "online cql + encoder #4 on maze 100000 env steps (seed 2)"
    assert jobs_client.RESULT_PATH_KEYS["train-online"] == "agent"
    assert curves.x_axis_title([online]) == "env step (online)"
    assert curves.x_axis_title([online, offline]) == "gradient step (offline) / env step (online)"
    assert curves.x_axis_title([offline]) == "gradient step"
    assert "first evaluation at env step 1000 (now at env step 640 of 100000)" in curves.no_points_reason(
        online, "normalised_score", ()
    )
    assert "online runs" in curves.no_points_reason(online, "diag_q_data", {"normalised_score"})


def test_runs_page_draws_online_and_offline_curves_together(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest
    from studio_fixture import quiet_app

    from merlion_core.jobs.store import JobStore

    quiet_app(monkeypatch, tmp_path)
    store = JobStore(tmp_path / "runs")
    offline = {"dataset": "/d/maze", "algo": "cql", "encoder": None, "steps": 20, "eval_every": 10, "options": {}}
    online = {"encoder": "/r/jobs/4/artifacts/encoder", "env": "maze", "options": {"env_steps": 96, "eval_every": 48}}
    for kind, config, steps in (("train-agent", offline, (10, 20)), ("train-online", online, (48, 96))):
        job_id = store.submit(kind, config, 0, sweep="test")
        store.claim(job_id)
        store.mark_started(job_id, os.getpid(), None)
        for step in steps:
            store.add_metrics(job_id, step, {"normalised_score": float(step)})
        store.finish(job_id, "succeeded", None, {"agent": f"/a/{job_id}"})
    store.close()
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "runs.py"), default_timeout=60).run()
    assert not at.exception, [e.message for e in at.exception]
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert spec["layout"]["xaxis"]["title"]["text"] == "gradient step (offline) / env step (online)"
    names = [t.get("name", "") for t in spec["data"]]
    assert any(n.startswith("online cql + encoder #4 on maze 96 env steps") for n in names), names
    assert any(n.startswith("cql 20 steps") for n in names), names


OPEN_MAZE = {"n_actuators": 5, "walls": [], "penalty_regions": [], "bonus_regions": [], "max_steps": 30}


@pytest.mark.slow
def test_online_sac_learns_an_open_maze_where_random_rarely_succeeds(tmp_path):
    """32 actions, External (movement vector) representation, no walls, 30 steps: the random policy
    reaches the goal in under a quarter of its episodes; online SAC must reach it in 90% after
    12,000 env steps (about 15 s of training on one thread), having not been there at its first evaluation
    (seed 0 here: success 0.0, 0.02, 0.18, 0.96, 0.92, 0.98 every 2,000 env steps; random: 0.13)."""
    from merlion_core.envs.behaviours import make_behaviour
    from merlion_core.envs.rollout import rollout_episodes
    from merlion_core.pipelines.online import train_online

    model = make_model("maze", OPEN_MAZE)
    random_success = rollout_episodes(model, make_behaviour(model, "random"), 500, np.random.default_rng(0)).successes
    assert random_success.mean() < 0.25
    rep = external.build(external.ExternalConfig(env="maze"), model.n_actions, model.obs_dim)
    save_representation(rep, "external", rep.config, tmp_path / "encoder", info={"env_id": "merlion/Maze-v0"})
    config = online_config(
        {
            "env_steps": 12_000,
            "warmup_steps": 1000,
            "eval_every": 2000,
            "eval_episodes": 50,
            "batch_size": 64,
            "hidden": (64, 64),
        }
    )
    result = train_online(
        None,
        tmp_path / "encoder",
        tmp_path / "agent",
        config=config,
        env_overrides=OPEN_MAZE,
        device="cpu",
        precision="fp32",
    )
    curve = json.loads((tmp_path / "agent" / "metrics.json").read_text())["curve"]
    success = [p["success_rate"] for p in curve]
    assert success[0] < 0.5, success  # it had to learn
    assert result["last"]["success_rate"] >= 0.9, success
    assert result["last"]["normalised_score"] >= 80, [p["normalised_score"] for p in curve]


def test_fig7_comparisons_resolve_only_separated_intervals():
    from script_support import load_script

    fig7 = load_script("bench/online_fig7.py", "bench_online_fig7")
    rows = {
        "merlion": {"last3_mean": 13.8, "last3_ci95": 21.1},  # [-7.3, 34.9]
        "transition": {"last3_mean": 2.3, "last3_ci95": 4.0},  # [-1.7, 6.3]
        "reconstruction": {"last3_mean": 60.0, "last3_ci95": 10.0},  # [50, 70]
    }
    offline = {"methods": {"merlion-cql": {"last3_mean": 6.6, "last3_ci95": 10.7, "seeds": 5}}}
    c = fig7.comparisons(rows, 35.06, offline)
    assert c["vs_behaviour"] == {"merlion": "below", "transition": "below", "reconstruction": "above"}
    assert c["between_representations"] == {
        "merlion vs transition": "not resolved",
        "merlion vs reconstruction": "below",
        "reconstruction vs transition": "above",
    }
    assert list(c["vs_offline_cql"]) == ["merlion"]  # only rows the offline table has
    assert c["vs_offline_cql"]["merlion"]["online_vs_offline"] == "not resolved"
    assert c["vs_offline_cql"]["merlion"]["offline_last3"] == [6.6, 10.7]
