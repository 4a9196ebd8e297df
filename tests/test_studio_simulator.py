"""studio.simulator without streamlit: which registered environments fit a dataset that names no
simulator, naming one in the dataset itself (every format, checked and atomic), and undoing it."""

from __future__ import annotations

import json

import pytest
from no_simulator_fixture import no_env_dataset

from merlion_core.data.collect import env_normalisers
from merlion_core.data.io import load_dataset, save_dataset
from studio import simulator


@pytest.fixture()
def data_dir(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    (folder / "uploads").mkdir(parents=True)
    monkeypatch.setenv("MERLION_DATA_DIR", str(folder))
    return folder


def test_only_envs_of_the_same_shape_are_offered():
    ids = [s.env_id for s in simulator.matching_envs(3, 4096)]
    assert ids == ["merlion/Maze-v0", "merlion/MultiStepMaze-v0"]  # both mazes: 3 values, 4^6 = 2^12 actions
    assert [s.env_id for s in simulator.matching_envs(100, 1000)] == ["merlion/Recommender-v0"]
    assert simulator.matching_envs(3, 64) == []  # a 6-actuator maze is not the registered (default) maze
    assert simulator.matching_envs(5, 4096) == []
    text = simulator.no_match_text(3, 64, inferred=True)
    assert "none can be named" in text and "maze (3, 4096)" in text and "inferred" in text


@pytest.mark.parametrize("fmt", ["npz", "d4rl", "d3rlpy", "native", "minari"])
def test_naming_persists_in_every_format_and_undo_restores(data_dir, fmt):
    ds = no_env_dataset(n=200, n_actions=4096)
    name = {"npz": "up.npz", "d4rl": "up.hdf5", "d3rlpy": "up.h5", "native": "up", "minari": "up-v0"}[fmt]
    path = save_dataset(ds, data_dir / "uploads" / name, format=fmt)
    if fmt == "minari":  # keys MERLION does not read are kept
        md_file = path / "data" / "metadata.json"
        md_file.write_text(json.dumps({**json.loads(md_file.read_text()), "author": "someone"}))
    meta = simulator.name_env(path, "multistep-maze")
    loaded = load_dataset(path)
    assert loaded.meta.env_id == meta.env_id == "merlion/MultiStepMaze-v0"
    assert loaded.meta.env_config == {}
    assert (loaded.meta.expert_return, loaded.meta.random_return) == env_normalisers("multistep-maze")
    assert simulator.named_in_studio(loaded.meta)
    assert loaded.content_digest() == ds.content_digest()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp copy left
    if fmt == "minari":
        assert json.loads((path / "data" / "metadata.json").read_text())["author"] == "someone"
    simulator.clear_env(path)
    back = load_dataset(path)
    assert back.meta.env_id is None and back.meta.expert_return is None and back.meta.random_return is None
    assert not simulator.named_in_studio(back.meta) and back.meta.behaviour == "logged"
    assert back.content_digest() == ds.content_digest()


def test_an_env_of_another_shape_is_refused_and_nothing_changes(data_dir):
    path = save_dataset(no_env_dataset(n=100, n_actions=64), data_dir / "uploads" / "small.npz", format="npz")
    before = path.read_bytes()
    with pytest.raises(simulator.SimulatorError, match="differ from this dataset's"):
        simulator.name_env(path, "maze")
    with pytest.raises(simulator.SimulatorError, match="unknown environment"):
        simulator.name_env(path, "no-such-env")
    with pytest.raises(simulator.SimulatorError, match="not named in the app"):
        simulator.clear_env(path)
    assert path.read_bytes() == before


def test_datasets_outside_the_data_folder_are_left_alone(data_dir, tmp_path):
    outside = save_dataset(no_env_dataset(n=100, n_actions=4096), tmp_path / "job-output", format="native")
    assert "only datasets in the data folder" in simulator.editable_problem(outside)
    with pytest.raises(simulator.SimulatorError, match="only datasets in the data folder"):
        simulator.name_env(outside, "maze")
    assert load_dataset(outside).meta.env_id is None


def test_a_dataset_that_already_names_a_simulator_is_not_renamed(data_dir):
    ds = no_env_dataset(n=100, n_actions=4096)
    path = save_dataset(ds, data_dir / "collected", format="native")
    simulator.name_env(path, "multistep-maze")
    with pytest.raises(simulator.SimulatorError, match="already names the simulator"):
        simulator.name_env(path, "maze")


def test_encoders_pair_only_with_the_same_shapes(tmp_path):
    def encoder(name: str, obs_dim: int, n_actions: int, env_id: str | None) -> str:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"obs_dim": obs_dim, "n_actions": n_actions, "env_id": env_id}))
        return str(folder)

    first = encoder("a", 3, 64, None)
    same, named = encoder("b", 3, 64, None), encoder("c", 3, 64, "merlion/Maze-v0")
    wide, more = encoder("d", 5, 64, None), encoder("e", 3, 128, None)
    keep, hidden = simulator.pairable(first, [same, named, wide, more, str(tmp_path / "missing")])
    assert keep == [same, named] and hidden == [wide, more, str(tmp_path / "missing")]
    maze, multistep = encoder("m", 3, 4096, "merlion/Maze-v0"), encoder("s", 3, 4096, "merlion/MultiStepMaze-v0")
    assert simulator.pairable(maze, [multistep]) == ([], [multistep])  # same shapes, different simulators
    assert simulator.shape_of_encoder(first) == (3, 64, None)


@pytest.mark.parametrize("fmt", ["d4rl", "native"])
def test_a_copy_that_does_not_read_back_the_same_leaves_the_dataset_as_it_was(data_dir, monkeypatch, fmt):
    path = save_dataset(no_env_dataset(n=100, n_actions=4096), data_dir / "uploads" / "keep", format=fmt)
    before = {p.name: p.read_bytes() for p in ([path] if path.is_file() else path.iterdir())}
    real_save = simulator.save_dataset
    monkeypatch.setattr(
        simulator,
        "save_dataset",  # a writer that loses the last episode
        lambda ds, out, format: real_save(ds.subset(range(80)), out, format=format),
    )
    with pytest.raises(simulator.SimulatorError, match="without changing its transitions; left as it was"):
        simulator.name_env(path, "multistep-maze")
    after = {p.name: p.read_bytes() for p in ([path] if path.is_file() else path.iterdir())}
    assert after == before and load_dataset(path).meta.env_id is None
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
