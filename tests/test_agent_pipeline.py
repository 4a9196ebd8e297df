"""train-agent / evaluate: learning curves, saved agents that act identically, clear errors."""

import json
import subprocess
import sys

import numpy as np
import pytest

from merlion_core.algos.artifacts import AgentArtifactError, load_agent
from merlion_core.data.collect import collect
from merlion_core.data.io import save_dataset
from merlion_core.pipelines.agent import evaluate_agent, train_agent

SMALL = {"n_actuators": 6}


@pytest.fixture(scope="module")
def dataset_path(tmp_path_factory):
    ds = collect("maze", "expert", 0.0, 3000, seed=0, env_overrides=SMALL)
    return save_dataset(ds, tmp_path_factory.mktemp("agent") / "expert6")


def test_bc_learning_curve_and_reload(dataset_path, tmp_path):
    result = train_agent(dataset_path, "bc", tmp_path / "bc", steps=600, eval_every=300, eval_episodes=30, device="cpu")
    curve = json.loads((tmp_path / "bc" / "metrics.json").read_text())["curve"]
    assert [p["step"] for p in curve] == [300, 600]
    assert all("normalised_score" in p and "loss" in p for p in curve)
    # cloning the expert on expert data must beat the random policy by far (random scores about 0)
    assert result["last"]["normalised_score"] > 50
    # the saved agent is the trained one: re-evaluating it with the curve's last seed and episode
    # count reproduces the curve's last point exactly
    reloaded = evaluate_agent(tmp_path / "bc", episodes=30, seed=600)
    assert reloaded["normalised_score"] == curve[-1]["normalised_score"]
    assert load_agent(tmp_path / "bc").algo == "bc"
    # an agent of the older format (networks without observation features) gets a clear error
    config_path = tmp_path / "bc" / "config.json"
    document = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**document, "version": 1}))
    with pytest.raises(AgentArtifactError, match="format version 1 is not 2 .*train the agent again"):
        load_agent(tmp_path / "bc")
    config_path.write_text(json.dumps(document))
    summary = evaluate_agent(tmp_path / "bc", episodes=20)
    assert {"mean_return", "normalised_score", "success_rate", "algo"} <= set(summary)
    assert summary["n_episodes"] == 20


def test_errors_are_clear(dataset_path, tmp_path):
    with pytest.raises(ValueError, match="acts on raw actions; drop --encoder"):
        train_agent(dataset_path, "dcql", tmp_path / "x", steps=1, encoder_dir=tmp_path)
    with pytest.raises(ValueError, match="dcql: no option"):
        train_agent(dataset_path, "dcql", tmp_path / "x", steps=1, overrides={"p": 0.1})
    with pytest.raises(AgentArtifactError, match="config.json: missing"):
        load_agent(tmp_path)


def test_cli_train_agent_and_evaluate(dataset_path, tmp_path):
    def run(*args):
        proc = subprocess.run([sys.executable, "-m", "merlion_core.cli", *args], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    out = tmp_path / "dcql"
    run(
        "train-agent",
        "--dataset",
        str(dataset_path),
        "--algo",
        "dcql",
        "--steps",
        "100",
        "--alpha",
        "0.7",
        "--out",
        str(out),
        "--quiet",
        "--eval-episodes",
        "5",
    )
    saved = json.loads((out / "config.json").read_text())
    assert saved["algo"] == "dcql" and saved["config"]["alpha"] == 0.7 and saved["env_id"] == "merlion/Maze-v0"
    assert saved["env_overrides"] == {"n_actuators": 6}
    summary = json.loads(run("evaluate", "--agent", str(out), "--episodes", "10", "--json"))
    assert summary["n_episodes"] == 10 and summary["env_id"] == "merlion/Maze-v0"


def test_latent_cql_through_an_encoder_folder(dataset_path, tmp_path):
    from merlion_core.pipelines.encoder import train_encoder

    train_encoder(dataset_path, "external", tmp_path / "enc")
    with pytest.raises(ValueError, match="cql: needs --encoder"):
        train_agent(dataset_path, "cql", tmp_path / "x", steps=1)
    train_agent(
        dataset_path,
        "cql",
        tmp_path / "cql",
        steps=60,
        encoder_dir=tmp_path / "enc",
        eval_episodes=5,
        overrides={"batch_size": 64, "hidden": (32, 32)},
        device="cpu",
    )
    loaded = load_agent(tmp_path / "cql")
    assert loaded.info["encoder"] == str(tmp_path / "enc")
    obs = np.random.default_rng(0).random((8, 3), dtype=np.float32)
    actions = loaded.agent.act(obs)
    assert actions.dtype == np.int64 and ((0 <= actions) & (actions < 64)).all()
    assert evaluate_agent(tmp_path / "cql", episodes=5)["n_episodes"] == 5
