"""Off-policy evaluation end to end: held-out episodes recorded with the agent, `merlion ope`, the ope job,
training without a simulator, and the one-line refusals."""

import dataclasses
import json

import numpy as np
import pytest

from merlion_core.data.collect import collect
from merlion_core.data.io import load_dataset, save_dataset
from merlion_core.pipelines.agent import train_agent
from merlion_core.pipelines.ope import OPEConfig, OPEInputError, ope_agent

FAST = OPEConfig(fqe_steps=60, fqe_heads=2, behaviour_steps=40, n_bootstrap=50, fqe_hidden=(32,))


@pytest.fixture(scope="module")
def maze(tmp_path_factory):
    """A small maze dataset with logged propensities, and a BC agent trained with 30% of episodes held out."""
    folder = tmp_path_factory.mktemp("ope")
    path = save_dataset(collect("maze", n=3000, seed=0), folder / "maze")
    agent = folder / "bc"
    train_agent(path, "bc", agent, steps=40, eval_episodes=2, holdout=0.3, holdout_seed=1, device="cpu")
    return folder, path, agent


def test_the_agent_records_its_held_out_episodes_and_trained_on_the_rest(maze):
    _, path, agent = maze
    dataset = load_dataset(path)
    info = json.loads((agent / "config.json").read_text())
    assert info["dataset"]["digest"] == dataset.content_digest()
    held = info["holdout"]
    assert held["fraction"] == 0.3 and held["seed"] == 1 and held["n_episodes"] == dataset.n_episodes
    assert held["n_heldout"] == round(0.3 * dataset.n_episodes) == len(held["heldout_episodes"])


def test_ope_uses_the_recorded_held_out_episodes_and_normalises(maze):
    _, path, agent = maze
    dataset = load_dataset(path)
    result = ope_agent(agent, path, FAST)
    info = json.loads((agent / "config.json").read_text())
    assert result["held_out_episodes"] == info["holdout"]["n_heldout"]
    ends = dataset.episode_ends
    lengths = np.diff(ends, prepend=-1)
    assert result["held_out_transitions"] == int(lengths[info["holdout"]["heldout_episodes"]].sum())
    assert result["behaviour_source"] == "logged propensities"
    assert set(result["estimators"]) == {"fqe", "wis", "dr"}
    for e in result["estimators"].values():
        assert np.isfinite(e["value"]) and e["ci95"][0] <= e["ci95"][1]
        assert e["normalised_score"] == pytest.approx(dataset.normalised_score(e["value"]))
        assert e["normalised_ci95"] == pytest.approx([dataset.normalised_score(c) for c in e["ci95"]])


def test_without_propensities_the_behaviour_model_is_fitted(maze, tmp_path):
    _, path, agent = maze
    other = collect("maze", n=1500, seed=3)  # other episodes: all held out
    plain = save_dataset(dataclasses.replace(other, propensities=None), tmp_path / "plain")
    result = ope_agent(agent, plain, dataclasses.replace(FAST, estimators=("wis",)))
    assert result["held_out"].startswith("every episode")
    assert result["held_out_episodes"] == load_dataset(plain).n_episodes
    assert result["behaviour_source"].startswith("fitted")


def test_refusals_are_one_line(maze, tmp_path):
    folder, path, _ = maze
    everything = folder / "bc-all"
    train_agent(path, "bc", everything, steps=5, eval_episodes=1, device="cpu")
    with pytest.raises(OPEInputError, match="trained on every episode of this dataset"):
        ope_agent(everything, path, FAST)
    small = collect("maze", n=120, seed=5, n_envs=1)  # two or three episodes
    with pytest.raises(OPEInputError, match="fewer than min_heldout_episodes"):
        ope_agent(everything, save_dataset(small, tmp_path / "small"), FAST)
    other = collect("multistep-maze", n=600, seed=0)  # same obs size and action count: refused by neither...
    fields = {
        k: getattr(other, k)
        for k in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
    }
    fewer = dataclasses.replace(other, n_actions=4096 + 4, **fields, propensities=None)
    with pytest.raises(OPEInputError, match="another dataset's action set"):
        ope_agent(everything, save_dataset(fewer, tmp_path / "wide"), FAST)
    with pytest.raises(ValueError, match="estimators: unknown"):
        OPEConfig(estimators=("fqe", "magic"))


def test_training_without_a_simulator_scores_by_ope(tmp_path):
    dataset = collect("maze", n=2000, seed=2)
    meta = dataclasses.replace(dataset.meta, env_id=None, env_config={})
    path = save_dataset(dataclasses.replace(dataset, meta=meta), tmp_path / "nosim")
    points = []
    result = train_agent(
        path,
        "bc",
        tmp_path / "agent",
        steps=20,
        eval_every=10,
        device="cpu",
        progress=lambda step, point: points.append(point),
        ope_config=dataclasses.replace(FAST, estimators=("wis", "fqe")),
    )
    evaluated = [p for p in points if "ope_wis" in p]
    assert [p["step"] for p in evaluated] == [10, 20]
    for p in evaluated:
        assert "normalised_score" not in p and p["ope_wis_lo"] <= p["ope_wis"] <= p["ope_wis_hi"]
        assert np.isfinite(p["ope_fqe"])
    info = json.loads((tmp_path / "agent" / "config.json").read_text())
    assert info["holdout"]["fraction"] == 0.2 and info["env_id"] is None
    assert result["last"]["ope"]["wis"]["normalised_score"] == pytest.approx(result["last"]["ope_wis"])


def test_fqe_reads_actions_through_an_encoder(maze, tmp_path):
    from merlion_core.pipelines.encoder import train_encoder

    _, path, agent = maze
    with pytest.raises(OPEInputError, match="acts on raw actions and has no encoder"):
        ope_agent(agent, path, dataclasses.replace(FAST, fqe_encoder="agent"))
    encoder = train_encoder(path, "rand1", tmp_path / "rand1", overrides={"dim": 3})["out"]
    result = ope_agent(agent, path, dataclasses.replace(FAST, fqe_encoder=str(encoder), estimators=("fqe", "dr")))
    assert result["estimators"]["fqe"]["details"]["action_features"] == 3
    assert np.isfinite(result["estimators"]["dr"]["value"])


def test_the_ope_job_writes_its_result(maze, tmp_path):
    from merlion_core.jobs.runner import run_job
    from merlion_core.jobs.spec import JobSpec, validate

    _, path, agent = maze
    options = {"estimators": ["dr"], "fqe_steps": 30, "fqe_heads": 2, "fqe_hidden": [16], "n_bootstrap": 20}
    spec = validate(JobSpec("ope", {"agent": str(agent), "dataset": str(path), "options": options}, seed=4))
    seen = []
    out = run_job(
        spec.kind, spec.config, spec.seed, tmp_path, lambda *a, **k: seen.append(a), checkpoint_dir=tmp_path / "ckpt"
    )
    assert set(out["estimators"]) == {"dr"} and "details" not in out["estimators"]["dr"]
    saved = json.loads((tmp_path / "ope.json").read_text())
    assert saved["config"]["seed"] == 4 and "details" in saved["estimators"]["dr"]
    assert seen and seen[-1][0] == 30  # FQE's progress reached its last step
    with pytest.raises(ValueError, match="ope config: options"):
        validate(JobSpec("ope", {"agent": str(agent), "dataset": str(path), "options": {"gamma": 2.0}}))


def test_merlion_ope_prints_the_documented_json(maze, capsys):
    from merlion_core.cli.main import main

    _, path, agent = maze
    assert (
        main(
            [
                "ope",
                "--agent",
                str(agent),
                "--dataset",
                str(path),
                "--estimators",
                "wis,fqe",
                "--fqe-steps",
                "30",
                "--fqe-heads",
                "2",
                "--fqe-hidden",
                "16",
                "--behaviour-steps",
                "20",
                "--n-bootstrap",
                "20",
                "--seed",
                "3",
                "--quiet",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert set(out["estimators"]) == {"wis", "fqe"} and "details" not in out["estimators"]["fqe"]
    assert set(out["estimators"]["fqe"]) == {"value", "normalised_score", "ci95", "normalised_ci95"}
    assert out["config"]["fqe_hidden"] == [16] and out["config"]["seed"] == 3 and out["config"]["fqe_steps"] == 30
    assert out["held_out_episodes"] == json.loads((agent / "config.json").read_text())["holdout"]["n_heldout"]
    with pytest.raises(SystemExit, match="comma-separated integers"):
        main(["ope", "--agent", str(agent), "--dataset", str(path), "--fqe-hidden", "wide"])
