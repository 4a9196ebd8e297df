"""The `merlion` command, run as a user would (a subprocess per call)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from merlion_core.cli.main import main


def run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "merlion_core.cli", *args], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "maze-medium"
    proc = run(
        "collect",
        "--env",
        "maze",
        "--behaviour",
        "medium",
        "--noise",
        "0.5",
        "--n",
        "3000",
        "--seed",
        "0",
        "--out",
        str(out),
        "--json",
    )
    return out, json.loads(proc.stdout)


def test_envs_lists_every_environment():
    proc = run("envs")
    assert "merlion/Maze-v0" in proc.stdout and "merlion/MultiStepMaze-v0" in proc.stdout
    rows = json.loads(run("envs", "--json").stdout)  # the dialogue env is listed with or without its data
    assert {r["id"]: r["n_actions"] for r in rows} == {
        "merlion/Maze-v0": 4096,
        "merlion/MultiStepMaze-v0": 4096,
        "merlion/Recommender-v0": 1000,
        "merlion/Dialogue-v0": 1500,
    }


@pytest.mark.parametrize("name", ["maze", "merlion/Maze-v0"])
def test_env_info_json(name):
    info = json.loads(run("env-info", name, "--json").stdout)
    assert info["id"] == "merlion/Maze-v0"
    assert info["n_actions"] == 4096 and info["obs_dim"] == 3
    assert info["n_equivalence_classes"] == 361
    assert info["expert_return"] > 100 and info["random_return"] < 0


def test_env_info_with_overrides():
    info = json.loads(run("env-info", "maze", "--env-config", '{"n_actuators": 8}', "--json").stdout)
    assert info["n_actions"] == 256 and info["n_equivalence_classes"] == 81


def test_collect_and_info(collected):
    out, summary = collected
    assert summary["n_transitions"] == 3000
    info = json.loads(run("dataset", "info", str(out), "--json").stdout)
    assert info["format"] == "native"
    assert info["n_transitions"] == 3000 and info["n_actions"] == 4096
    assert info["n_episodes"] == summary["n_episodes"] > 50
    assert 20 < info["behaviour_normalised_score"] < 70
    expected = 100 * (info["mean_return"] - info["random_return"]) / (info["expert_return"] - info["random_return"])
    assert info["behaviour_normalised_score"] == pytest.approx(expected)


def test_collect_refuses_to_overwrite(collected):
    out, _ = collected
    proc = run("collect", "--env", "maze", "--n", "10", "--out", str(out), check=False)
    assert proc.returncode == 1 and "already exists" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("fmt", ["npz", "d4rl", "minari", "d3rlpy"])
def test_convert_round_trip_and_validate(collected, tmp_path, fmt):
    from merlion_core.data.io import load_dataset

    out, _ = collected
    target = tmp_path / f"converted-{fmt}"
    run("dataset", "convert", str(out), str(target), "--to", fmt)
    proc = run("dataset", "validate", str(target))
    assert proc.stdout.startswith("valid:") and f"{fmt}" in proc.stdout
    back = tmp_path / "back"
    run("dataset", "convert", str(target), str(back), "--to", "native")
    a, b = load_dataset(out), load_dataset(back)
    for name in ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), (fmt, name)


@pytest.mark.parametrize("content", [b"", b"hello world", b"PK\x03\x04 broken zip", b"\x89HDF\r\n\x1a\n garbage"])
def test_validate_never_crashes(tmp_path, content):
    path = tmp_path / "upload.npz"
    path.write_bytes(content)
    proc = run("dataset", "validate", str(path), check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("invalid:") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_validate_missing_path(tmp_path):
    proc = run("dataset", "validate", str(tmp_path / "nope.npz"), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr


def test_unknown_env_is_a_one_line_error(capsys):
    assert main(["env-info", "labyrinth"]) == 1
    err = capsys.readouterr().err
    assert "unknown environment 'labyrinth'" in err and len(err.strip().splitlines()) == 1


def test_collect_options_come_from_the_config():
    from merlion_core.cli.main import build_parser

    help_text = build_parser()._subparsers._group_actions[0].choices["collect"].format_help()
    for flag in ("--env", "--behaviour", "--noise", "--n ", "--seed", "--n-envs"):
        assert flag in help_text
    assert "paper: 50%" in help_text  # the field's docstring is the help
