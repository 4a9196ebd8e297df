"""Artifacts, the train-encoder / diagnose commands, warm start, and a small learning test."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from merlion_core import diagnostics
from merlion_core.data.collect import collect
from merlion_core.data.io import save_dataset
from merlion_core.envs import make_model
from merlion_core.representation.artifacts import ArtifactError, load_representation, save_representation
from merlion_core.representation.merlion import MerlionConfig, fit, warm_start
from merlion_core.representation.registry import METHODS, get_method

SMALL_MAZE = {"n_actuators": 6}


@pytest.fixture(scope="module")
def small_dataset():
    return collect("maze", "medium", 0.5, 20_000, seed=0, env_overrides=SMALL_MAZE)


@pytest.fixture(scope="module")
def small_dataset_path(small_dataset, tmp_path_factory):
    return save_dataset(small_dataset, tmp_path_factory.mktemp("data") / "maze6")


def _spearman(rep, dataset, seed=0):
    model = make_model("maze", SMALL_MAZE)
    rng = np.random.default_rng(seed)
    states = diagnostics.sample_states(np.asarray(dataset.observations), 32, rng)

    def embed_fn(obs, actions):
        with torch.no_grad():
            return rep.embed_chunk(torch.as_tensor(obs), torch.as_tensor(actions)).numpy()

    return diagnostics.diagnose(model, embed_fn, states, n_action_samples=64, rng=rng)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_saves_and_loads_identically(method, small_dataset, tmp_path):
    spec = get_method(method)
    config = spec.default_config(steps=20, **({"env": "merlion/Maze-v0"} if method == "external" else {}))
    rep, _ = spec.fit(small_dataset, config, device="cpu")
    save_representation(
        rep, method, getattr(rep, "config", config), tmp_path / "enc", info={"env_id": "merlion/Maze-v0"}
    )
    loaded = load_representation(tmp_path / "enc")
    obs = torch.as_tensor(small_dataset.observations[:7])
    assert loaded.method == method
    assert torch.equal(loaded.representation.embed_all(obs), rep.cpu().eval().embed_all(obs))
    assert loaded.representation.embed_all(obs).shape == (7, 64, rep.dim)


def test_loading_a_broken_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="config.json: missing"):
        load_representation(tmp_path)
    (tmp_path / "config.json").write_text(
        '{"format": "merlion-representation", "version": 1, "method": "merlion",'
        ' "config": {"dim": 2}, "n_actions": 64, "obs_dim": 3}'
    )
    with pytest.raises(ArtifactError, match="weights.pt: missing"):
        load_representation(tmp_path)
    (tmp_path / "weights.pt").write_bytes(b"not a torch file")
    with pytest.raises(ArtifactError, match="weights.pt: cannot load"):
        load_representation(tmp_path)


def test_merlion_learns_the_metric_on_a_small_maze(small_dataset):
    config = MerlionConfig(steps=3000, seed=0, reward_scale=0.01, lr=1e-3)
    rep, metrics = fit(small_dataset, config, device="cpu")
    learned = _spearman(rep, small_dataset)
    rand, _ = get_method("rand1").fit(small_dataset, get_method("rand1").default_config(seed=0), device="cpu")
    random_score = _spearman(rand, small_dataset)
    assert abs(random_score.spearman_median) < 0.2
    assert learned.spearman_median > 0.5, learned.spearman_median
    assert learned.class_separation < random_score.class_separation - 0.3


def test_warm_start_yields_reforming_embeddings(small_dataset):
    rep, _ = fit(small_dataset, MerlionConfig(steps=200, seed=0), device="cpu")
    before = rep.embed_all(torch.as_tensor(small_dataset.observations[:4])).detach().numpy()
    updates = list(
        warm_start(
            rep,
            small_dataset,
            p=0.5,
            tau=0.5,
            steps=120,
            yield_every=40,
            states=small_dataset.observations[:4],
            device="cpu",
        )
    )
    assert [u.step for u in updates] == [40, 80, 120]
    assert all(u.embeddings.shape == (4, 64, 2) for u in updates)
    assert not np.allclose(updates[-1].embeddings, before)
    assert rep.config.p == 0.5 and rep.config.tau == 0.5
    # warm start trains the encoder only: the models are untouched
    assert "transition_loss" not in updates[-1].metrics


def run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "merlion_core.cli", *args], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_train_encoder_and_diagnose_commands(small_dataset_path, tmp_path):
    out = tmp_path / "enc"
    result = json.loads(
        run(
            "train-encoder",
            "--dataset",
            str(small_dataset_path),
            "--method",
            "merlion",
            "--steps",
            "50",
            "--p",
            "0.2",
            "--seed",
            "3",
            "--out",
            str(out),
            "--json",
            "--quiet",
        ).stdout
    )
    assert result["method"] == "merlion"
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["p"] == 0.2 and saved["config"]["dim"] == 2 and saved["config"]["seed"] == 3
    assert saved["env_id"] == "merlion/Maze-v0"
    diag = json.loads(run("diagnose", "--encoder", str(out), "--states", "8", "--actions", "32", "--json").stdout)
    assert {"spearman_median", "class_separation", "ood_fraction", "env_id", "method"} <= set(diag)
    assert 0.0 <= diag["ood_fraction"] <= 1.0
    # the indicator's separation: at the encoder's own tau (0.3) the uniform share is ood_fraction, and a
    # larger tau flags at least as many actions (uniform and logged alike)
    by_tau = {row["tau"]: row for row in diag["ood_separation"]}
    assert by_tau[0.3]["uniform_actions_flagged"] == diag["ood_fraction"]
    shares = [(row["uniform_actions_flagged"], row["logged_actions_flagged"]) for row in diag["ood_separation"]]
    assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(shares, shares[1:], strict=False))


def test_train_encoder_rejects_options_of_other_methods(small_dataset_path, tmp_path):
    proc = run(
        "train-encoder",
        "--dataset",
        str(small_dataset_path),
        "--method",
        "rand1",
        "--p",
        "0.2",
        "--out",
        str(tmp_path / "x"),
        check=False,
    )
    assert proc.returncode == 1 and "rand1: no option(s) p" in proc.stderr and "Traceback" not in proc.stderr


def test_config_precedence_env_then_method_then_user():
    from merlion_core.pipelines.encoder import representation_config

    no_p = representation_config("merlion-no-p", "merlion/Maze-v0", {})
    assert no_p.p == 0.0 and no_p.dim == 2 and no_p.reward_scale == 0.01  # the ablation keeps p = 0
    assert representation_config("merlion", "merlion/MultiStepMaze-v0", {}).p == 0.1
    assert representation_config("merlion", "merlion/Maze-v0", {"p": 0.5}).p == 0.5
    assert representation_config("external", "merlion/Maze-v0", {}).env == "merlion/Maze-v0"
