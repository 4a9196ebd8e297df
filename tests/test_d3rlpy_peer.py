"""The d3rlpy peer: what runs without d3rlpy (conversion, epoch plan, config overrides, the missing-d3rlpy
error), and one real run through d3rlpy's own virtualenv.

d3rlpy 2.8.1 pins gymnasium 1.0.0, so it is not installed in the main environment. The real run
(``test_real_d3rlpy_run_through_the_peer_cli``) uses, in order: this interpreter if it has d3rlpy,
``$MERLION_D3RLPY_PYTHON``, /work/venv-d3rlpy/bin/python. With none of them it carries the ``peer``
marker, deselected by default; run it with a d3rlpy interpreter set:
    MERLION_D3RLPY_PYTHON=VENV/bin/python python -m pytest -m peer tests/test_d3rlpy_peer.py
"""

import dataclasses
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from merlion_core.data.collect import collect
from merlion_core.data.io import save_dataset
from merlion_core.peers import d3rlpy_peer
from merlion_core.peers.d3rlpy_peer import d3rlpy_device, d3rlpy_python, epoch_plan, make_config, to_d3rlpy_arrays

VENV_PYTHON = Path("/work/venv-d3rlpy/bin/python")
SMALL_MAZE = {"n_actuators": 5}  # 32 actions; one env config, so the normalisers are measured once
PEER_PYTHON = d3rlpy_python() or (str(VENV_PYTHON) if VENV_PYTHON.exists() else None)


def d3rlpy_transitions(arrays: dict) -> list[tuple]:
    """The (s, a, r, s', terminal) transitions d3rlpy 2.8.1 samples from MDPDataset arrays:
    EpisodeGenerator splits after every terminal or timeout row; BasicTransitionPicker takes every
    row but the last of an unterminated episode, s' = the next row (zeros after a terminal row)."""
    out, start = [], 0
    ends = np.flatnonzero((arrays["terminals"] > 0) | (arrays["timeouts"] > 0))
    for end in ends:
        terminated = bool(arrays["terminals"][end])
        for i in range(start, end + 1 if terminated else end):
            last = terminated and i == end
            nxt = np.zeros_like(arrays["observations"][i]) if last else arrays["observations"][i + 1]
            out.append(
                (
                    tuple(arrays["observations"][i]),
                    int(arrays["actions"][i]),
                    float(arrays["rewards"][i]),
                    tuple(nxt),
                    last,
                )
            )
        start = int(end) + 1
    return out


def our_transitions(f: dict) -> list[tuple]:
    """Ours, with s' zeroed after a terminal (it is never bootstrapped from)."""
    return [
        (tuple(s), int(a), float(r), tuple(np.zeros_like(s2) if t else s2), bool(t))
        for s, a, r, s2, t in zip(
            f["observations"], f["actions"], f["rewards"], f["next_observations"], f["terminals"], strict=True
        )
    ]


HAND = {  # ends: terminal at 1; timeout at 3; a break at 4 (s' [21] != next s [30]); row 5 unflagged
    "observations": np.array([[0], [1], [10], [11], [20], [30]], np.float32),
    "next_observations": np.array([[1], [2], [11], [12], [21], [31]], np.float32),
    "actions": np.array([3, 4, 5, 6, 7, 1], np.int64),
    "rewards": np.array([1, 2, 3, 4, 5, 6], np.float32),
    "terminals": np.array([0, 1, 0, 0, 0, 0], bool),
    "timeouts": np.array([0, 0, 0, 1, 0, 0], bool),
}


def test_conversion_pads_every_open_episode_end_with_its_successor():
    out = to_d3rlpy_arrays(**HAND)
    assert out["observations"][:, 0].tolist() == [0, 1, 10, 11, 12, 20, 21, 30, 31]
    assert out["actions"].tolist() == [3, 4, 5, 6, 0, 7, 0, 1, 0]
    assert out["rewards"].tolist() == [1, 2, 3, 4, 0, 5, 0, 6, 0]
    assert out["terminals"].tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0]
    assert out["timeouts"].tolist() == [0, 0, 0, 0, 1, 0, 1, 0, 1]
    assert out["observations"].dtype == np.float32 and out["terminals"].dtype == np.float32
    assert d3rlpy_transitions(out) == our_transitions(HAND)


def test_conversion_keeps_every_collected_transition_exactly_once():
    ds = collect("maze", "medium", 0.5, 700, seed=3, n_envs=16, env_overrides=SMALL_MAZE)
    fields = ds.arrays()
    out = to_d3rlpy_arrays(**fields)
    pads = int(out["timeouts"].sum())
    assert pads == int((fields["timeouts"] & ~fields["terminals"]).sum()) >= 1  # collect chains every episode
    assert out["observations"].shape == (ds.n_transitions + pads, ds.obs_dim)
    assert d3rlpy_transitions(out) == our_transitions(fields)


def test_conversion_rejects_bad_input():
    with pytest.raises(ValueError, match="both terminal and timeout"):
        to_d3rlpy_arrays(**{**HAND, "timeouts": np.array([0, 1, 0, 1, 0, 0], bool)})
    with pytest.raises(ValueError, match=r"rewards: expected shape \(6,\)"):
        to_d3rlpy_arrays(**{**HAND, "rewards": np.zeros(5, np.float32)})


def test_epoch_plan_gives_exactly_the_requested_steps():
    assert epoch_plan(100, 30) == [(30, 3), (10, 1)]
    assert epoch_plan(100, 25) == [(25, 4)]
    assert epoch_plan(100, 0) == [(100, 1)]
    assert epoch_plan(100, 500) == [(100, 1)]
    with pytest.raises(ValueError, match="steps"):
        epoch_plan(0, 10)
    with pytest.raises(ValueError, match="eval_every"):
        epoch_plan(10, -1)


@dataclasses.dataclass(frozen=True)
class FakeDiscreteCQLConfig:
    batch_size: int = 32
    alpha: float = 1.0
    compile_graph: bool = False
    encoder_factory: object = None


def test_config_applies_the_paper_settings_then_numeric_overrides():
    fake = SimpleNamespace(algos=SimpleNamespace(DiscreteCQLConfig=FakeDiscreteCQLConfig))
    assert make_config(fake, "dcql") == FakeDiscreteCQLConfig(alpha=0.5)
    config = make_config(fake, "dcql", {"batch_size": 64, "alpha": 1})
    assert (config.batch_size, config.alpha, type(config.alpha)) == (64, 1.0, float)
    with pytest.raises(ValueError, match="no numeric option 'encoder_factory'.*alpha, batch_size, compile_graph"):
        make_config(fake, "dcql", {"encoder_factory": "vector"})
    with pytest.raises(ValueError, match="batch_size must be int"):
        make_config(fake, "dcql", {"batch_size": 6.5})
    with pytest.raises(ValueError, match="compile_graph must be bool"):
        make_config(fake, "dcql", {"compile_graph": 1})
    with pytest.raises(ValueError, match="unknown 'cql'"):
        make_config(fake, "cql")


def test_device_strings():
    assert d3rlpy_device("cpu") == "cpu:0"
    assert d3rlpy_device("cuda:1") == "cuda:1"


@pytest.fixture
def no_d3rlpy(monkeypatch):
    monkeypatch.setitem(sys.modules, "d3rlpy", None)  # `import d3rlpy` now raises ImportError


def test_missing_d3rlpy_is_a_clear_error_and_the_module_still_imports(no_d3rlpy, tmp_path):
    import importlib

    importlib.reload(d3rlpy_peer)  # the module itself never imports d3rlpy at import time
    with pytest.raises(d3rlpy_peer.D3rlpyMissingError, match=r"separate virtualenv.*pip install d3rlpy==2\.8\.1"):
        d3rlpy_peer.run_d3rlpy("dcql", tmp_path / "absent", steps=10, seed=0, eval_every=0, eval_episodes=1)


def test_cli_reports_missing_d3rlpy_in_one_line(no_d3rlpy, tmp_path, capsys):
    out = tmp_path / "r.json"
    code = d3rlpy_peer.main(
        ["--algo", "dcql", "--dataset", str(tmp_path / "absent"), "--steps", "5", "--out", str(out)]
    )
    err = capsys.readouterr().err
    assert code == 1 and not out.exists()
    assert err.count("\n") == 1 and err.startswith("d3rlpy_peer: error: d3rlpy is not importable")
    assert "gymnasium==1.0.0" in err and "pip install d3rlpy==2.8.1" in err


@pytest.fixture(scope="module")
def tiny_dataset_path(tmp_path_factory):
    """1500 maze transitions over 32 actions where the top id never occurs (d3rlpy would infer 31)."""
    path = tmp_path_factory.mktemp("peer") / "tiny"
    ds = collect("maze", "medium", 0.5, 1500, seed=0, env_overrides=SMALL_MAZE)
    actions = np.where(ds.actions == ds.n_actions - 1, 0, ds.actions)
    save_dataset(dataclasses.replace(ds, actions=actions), path)
    return path


@(pytest.mark.peer if PEER_PYTHON is None else (lambda test: test))
def test_real_d3rlpy_run_through_the_peer_cli(tiny_dataset_path):
    result = d3rlpy_peer.run_d3rlpy_isolated(
        "dcql",
        tiny_dataset_path,
        python=PEER_PYTHON or sys.executable,
        steps=50,
        seed=0,
        eval_every=20,
        eval_episodes=3,
        device="cpu",
        timeout=300,
    )
    assert result["algo"] == "d3rlpy-dcql" and result["d3rlpy_version"] == "2.8.1"
    assert [p["step"] for p in result["curve"]] == [20, 40, 50]
    for point in result["curve"]:
        assert math.isfinite(point["normalised_score"]) and 0.0 <= point["success_rate"] <= 1.0
        assert math.isfinite(point["loss"]) and math.isfinite(point["conservative_loss"])
    assert result["config"]["alpha"] == 0.5 and result["config"]["batch_size"] == 32
    assert result["steps"] == 50 and result["device"] == "cpu:0" and result["steps_per_second"] > 0
    assert result["env_id"] == "merlion/Maze-v0" and result["action_size"] == 32
