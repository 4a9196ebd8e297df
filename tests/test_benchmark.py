"""The benchmark: method names, statistics by hand, and a tiny end-to-end run that resumes."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from merlion_core.benchmark import runner as benchmark
from merlion_core.benchmark.methods import (
    FIELD_METHODS,
    PAPER_METHODS,
    bench_method,
    encoder_overrides,
    env_has_task_success,
    expand_methods,
)
from merlion_core.benchmark.report import (
    compare_intervals,
    last3_interval,
    markdown_table,
    mean_ci95,
    summarise_method,
)
from merlion_core.benchmark.runner import run_benchmark
from merlion_core.data.collect import collect, env_normalisers
from merlion_core.data.io import load_dataset, save_dataset


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_method_names():
    ablation = bench_method("merlion-p0.3-cql")
    assert (ablation.representation, dict(ablation.representation_overrides), ablation.algo) == (
        "merlion",
        {"p": 0.3},
        "cql",
    )
    assert bench_method("dcql").representation is None
    assert bench_method("transition-bcq").algo == "bcq"
    assert bench_method("d3rlpy-dbcq").peer
    # the catalogue-scale MERLION row (issue 24): its encoder trains G by a sampled softmax, sparse tables
    sampled = encoder_overrides(bench_method("merlion-sampled-cql"), 3, 500, "merlion/Recommender-v0")
    assert sampled == {"behaviour_loss": "sampled", "sparse_tables": True, "seed": 3, "steps": 500}
    with pytest.raises(ValueError, match="unknown method 'merlion-sac'"):
        bench_method("merlion-sac")
    assert expand_methods("paper,dcql,merlion-p0.5-cql") == [*PAPER_METHODS, "merlion-p0.5-cql"]
    with pytest.raises(ValueError, match="no methods"):
        expand_methods(" , ")


def test_mean_ci95_by_hand():
    mean, half = mean_ci95([1.0, 2.0, 3.0])
    # sd = 1, t_{0.975, 2} = 4.302653
    assert mean == 2.0 and math.isclose(half, 4.302653 / math.sqrt(3), rel_tol=1e-6)
    assert math.isnan(mean_ci95([5.0])[1])


def test_summary_of_runs_with_a_failure():
    def record(seed, scores):
        curve = [
            {"step": 10 * (i + 1), "normalised_score": s, "mean_return": s, "success_rate": 0.5}
            for i, s in enumerate(scores)
        ]
        return {
            "seed": seed,
            "curve": curve,
            "last_score": scores[-1],
            "best_score": max(scores),
            "last_success_rate": 0.5,
            "train_seconds": 2.0,
        }

    rows = summarise_method(
        [
            record(0, [0.0, 10.0, 30.0, 20.0]),
            {**record(1, [90.0, 20.0, 40.0, 60.0]), "precision": "bf16"},
            {"seed": 2, "curve": [], "last_score": None, "best_score": None, "error": "boom"},
        ]
    )
    assert rows["seeds"] == 2 and rows["failed"] == [{"seed": 2, "error": "boom"}]
    assert rows["last_mean"] == 40.0 and rows["best_mean"] == 60.0
    # the steady score: each run's last three evaluations, (10 + 30 + 20) / 3 and (20 + 40 + 60) / 3
    assert rows["last3_mean"] == pytest.approx((20.0 + 40.0) / 2)
    assert [p["mean"] for p in rows["curve"]] == [45.0, 15.0, 35.0, 40.0]
    table = markdown_table(
        {
            "env_id": "x",
            "settings": {"dataset": "d"},
            "behaviour_score": 1.0,
            "config": {"steps": 40, "eval_every": 10, "eval_episodes": 5, "encoder_steps": 1},
            "methods": {"m": rows},
        }
    )
    assert (
        "| m | 2 (1 failed) | 40.0 +- 254.1 | 30.0 +- 127.1 |" in table
        and "| last 3 |" in table
        and "| best |" not in table
    )
    # a record from before the precision option counts as fp32
    assert rows["precisions"] == ["bf16", "fp32"] and "precisions: bf16, fp32." in table


def test_tiny_benchmark_runs_and_resumes(tmp_path, monkeypatch):
    monkeypatch.delenv("MERLION_D3RLPY_PYTHON", raising=False)
    # a 64-action maze keeps the planner behind the normalisers and the evaluation cheap
    data_path = tmp_path / "data"
    save_dataset(collect("maze", "medium", 0.5, 2000, seed=0, env_overrides={"n_actuators": 6}), data_path)
    events = []
    options = dict(eval_every=15, eval_episodes=3, encoder_steps=20, workers=1, dataset=str(data_path))
    summary = run_benchmark(
        "maze", "bc,rand1-cql,d3rlpy-bc", 2, 30, tmp_path, lambda event, info: events.append((event, info)), **options
    )
    rows = summary["methods"]
    assert set(rows) == {"bc", "rand1-cql", "d3rlpy-bc"}
    for name in ("bc", "rand1-cql"):
        assert rows[name]["seeds"] == 2 and [p["step"] for p in rows[name]["curve"]] == [15, 30]
        assert all(math.isfinite(p["mean"]) for p in rows[name]["curve"])
    # d3rlpy is not importable in this environment: the run is recorded as failed with the reason
    try:
        import d3rlpy  # noqa: F401
    except ImportError:
        assert rows["d3rlpy-bc"]["seeds"] == 0 and "pass --peer-python" in rows["d3rlpy-bc"]["failed"][0]["error"]
    record = json.loads((tmp_path / "runs" / "bc" / "seed1.json").read_text())
    assert record["seed"] == 1 and record["steps"] == 30 and len(record["curve"]) == 2
    assert record["last_score"] == record["curve"][-1]["normalised_score"]
    assert "| bc | 2 |" in (tmp_path / "README.md").read_text()
    # the behaviour's mode on the agents' evaluation episodes (seed = step), beside the dataset's score
    from merlion_core.evaluation import evaluate_behaviour

    reference = summary["behaviour_reference"]
    expected = [evaluate_behaviour("medium", "maze", 3, step, {"n_actuators": 6}).normalised_score for step in (15, 30)]
    assert reference["behaviour"] == "medium" and [p["step"] for p in reference["curve"]] == [15, 30]
    assert [p["normalised_score"] for p in reference["curve"]] == pytest.approx(expected)
    assert reference["last_score"] == pytest.approx(expected[-1])
    assert reference["best_score"] == pytest.approx(max(expected))
    row = f"| medium policy without the collection noise, on the agents' evaluation episodes | - | {expected[-1]:.1f} |"
    assert row in (tmp_path / "README.md").read_text()
    assert (tmp_path / "curves.svg").read_text().startswith("<svg")
    # encoders are trained once per (representation, seed) and shared
    assert sorted(p.name for p in (tmp_path / "work" / "encoders").iterdir()) == ["rand1-seed0", "rand1-seed1"]
    # one worker: seed-major, each encoder just before its first run (an interrupted benchmark has
    # every method at its first seeds)
    order = [
        (e, i.get("method"), i.get("seed"), Path(i.get("folder", "")).name)
        for e, i in events
        if e in ("run", "encoder")
    ]
    assert [(e, m, s) for e, m, s, _ in order if e == "run"] == [
        ("run", m, s) for s in (0, 1) for m in ("bc", "rand1-cql", "d3rlpy-bc")
    ]
    assert [f for e, _, _, f in order if e == "encoder"] == ["rand1-seed0", "rand1-seed1"]
    assert order.index(("encoder", None, None, "rand1-seed1")) > order.index(("run", "d3rlpy-bc", 0, ""))

    # a second call finds every finished run and trains nothing (failed runs are retried), also
    # when it is executed differently (workers, device are not part of a run's settings)
    events.clear()
    run_benchmark(
        "maze",
        "bc,rand1-cql",
        2,
        30,
        tmp_path,
        lambda event, info: events.append((event, info)),
        **{**options, "workers": 2, "device": "cpu"},
    )
    assert [e for e, _ in events if e == "run"] == []
    # report only: nothing is trained, methods without records show no seeds
    report = run_benchmark(
        "maze",
        "bc,dcql",
        2,
        30,
        tmp_path,
        lambda event, info: events.append((event, info)),
        report_only=True,
        **options,
    )
    assert [e for e, _ in events if e == "run"] == []
    assert report["methods"]["bc"]["seeds"] == 2 and report["methods"]["dcql"]["seeds"] == 0
    assert "| dcql | 0 (not run yet) | - |" in (tmp_path / "README.md").read_text()
    assert not (tmp_path / "runs" / "dcql").exists()
    assert "workers" not in json.loads((tmp_path / "summary.json").read_text())["settings"]["config"]
    # the seed count is not part of a run's settings: more seeds train only the new ones, fewer
    # report the first ones
    events.clear()
    run_benchmark("maze", "bc", 3, 30, tmp_path, lambda event, info: events.append((event, info)), **options)
    assert [(i["method"], i["seed"]) for e, i in events if e == "run"] == [("bc", 2)]
    assert run_benchmark("maze", "bc", 1, 30, tmp_path, report_only=True, **options)["methods"]["bc"]["seeds"] == 1
    # a setting that changes what is computed (the evaluation) does rerun
    events.clear()
    run_benchmark(
        "maze",
        "bc",
        1,
        30,
        tmp_path,
        lambda event, info: events.append((event, info)),
        **{**options, "eval_episodes": 2},
    )
    assert [e for e, _ in events if e == "run"] == ["run"]


def test_encoders_are_reused_only_with_the_same_settings(tmp_path):
    from merlion_core.benchmark.runner import train_bench_encoder

    data_path = tmp_path / "data"
    save_dataset(collect("maze", "medium", 0.5, 500, seed=0, env_overrides={"n_actuators": 4}), data_path)
    folder = tmp_path / "encoder"

    def trained_steps():
        return json.loads((folder / "config.json").read_text())["config"]["steps"]

    train_bench_encoder(str(data_path), "transition-cql", 0, 3, str(folder), "cpu")
    assert trained_steps() == 3
    first = (folder / "weights.pt").stat().st_mtime_ns
    train_bench_encoder(str(data_path), "transition-cql", 0, 3, str(folder), "cpu")
    assert (folder / "weights.pt").stat().st_mtime_ns == first  # same settings: reused
    train_bench_encoder(str(data_path), "transition-cql", 0, 4, str(folder), "cpu")
    assert trained_steps() == 4  # other settings: trained again


def test_groups_leave_out_external_where_the_env_has_none():
    dialogue = expand_methods("paper", "merlion/Dialogue-v0")
    assert dialogue == [m for m in PAPER_METHODS if m != "external-cql"]
    assert expand_methods("paper", "recommender") == list(PAPER_METHODS)  # its action_features table
    assert "external-cql" in expand_methods("paper", "maze")
    with pytest.raises(ValueError, match="external-bcq: merlion/Dialogue-v0 has no external representation"):
        expand_methods("dcql,external-bcq", "merlion/Dialogue-v0")


def test_the_field_group_applies_decqn_only_where_the_actions_are_factorised():
    skipped: dict[str, str] = {}
    assert expand_methods("field", "recommender", skipped) == ["diql", "merlion-iql"]
    assert set(skipped) == {"decqn-cql", "decqn-bcq"}
    assert "declares no factorised action space" in skipped["decqn-cql"]
    assert expand_methods("field", "maze") == list(FIELD_METHODS)
    assert expand_methods("field", "multistep-maze") == list(FIELD_METHODS)
    with pytest.raises(ValueError, match="decqn-bcq: merlion/Dialogue-v0 declares no factorised .*not applicable"):
        expand_methods("bc,decqn-bcq", "merlion/Dialogue-v0")


def test_a_command_that_adds_methods_keeps_the_earlier_rows(tmp_path, monkeypatch):
    data_path = tmp_path / "data"
    save_dataset(collect("maze", "medium", 0.5, 1000, seed=0, env_overrides={"n_actuators": 6}), data_path)
    options = dict(eval_every=10, eval_episodes=2, workers=1, dataset=str(data_path))
    run_benchmark("maze", "bc", 1, 10, tmp_path, **options)
    summary = run_benchmark("maze", "dcql", 1, 10, tmp_path, **options)
    assert list(summary["methods"]) == ["bc", "dcql"] and summary["methods"]["bc"]["seeds"] == 1
    table = (tmp_path / "README.md").read_text()
    assert "| bc | 1 |" in table and "| dcql | 1 |" in table
    # other settings (here the evaluation) are another benchmark: its table starts afresh
    assert list(run_benchmark("maze", "dcql", 1, 10, tmp_path, **{**options, "eval_episodes": 3})["methods"]) == [
        "dcql"
    ]


def test_not_applicable_methods_are_rows_with_their_reason(tmp_path):
    from merlion_core.benchmark.report import write_summary

    config = {"seeds": 1, "steps": 10, "eval_every": 5, "eval_episodes": 1, "encoder_steps": 1}
    summary = write_summary(
        tmp_path,
        "merlion/Recommender-v0",
        [],
        SimpleNamespace(**config),
        3.0,
        {"env_id": "x", "dataset": "d"},
        config_dict=config,
        not_applicable={"decqn-cql": "no factors"},
    )
    assert summary["not_applicable"] == {"decqn-cql": "no factors"}
    assert "| decqn-cql | not applicable: no factors | - | - | - | - |" in (tmp_path / "README.md").read_text()


def test_every_representation_gets_the_paper_dim_of_the_env():
    # paper A.3: |E| = 2, 2, 10, 30; the baselines use "the same architecture" with other representations
    rec, dia = "merlion/Recommender-v0", "merlion/Dialogue-v0"
    assert encoder_overrides(bench_method("rand1-cql"), 3, 100, rec) == {"seed": 3, "steps": 100, "dim": 10}
    assert encoder_overrides(bench_method("transition-cql"), 0, 100, dia)["dim"] == 30
    assert encoder_overrides(bench_method("cvae-cql"), 0, 100, dia)["dim"] == 30
    # MERLION's per-env dim comes from representation_config; the maze's 2 is every class's default
    assert encoder_overrides(bench_method("merlion-p0.3-cql"), 1, 50, rec) == {"p": 0.3, "seed": 1, "steps": 50}
    assert "dim" not in encoder_overrides(bench_method("reconstruction-cql"), 0, 100, "merlion/Maze-v0")
    assert "dim" not in encoder_overrides(bench_method("external-cql"), 0, 100, rec)  # the env fixes its size


def test_success_rate_only_where_the_env_defines_success():
    assert not env_has_task_success("recommender")  # an episode ends when the user's budget runs out
    assert env_has_task_success("maze") and env_has_task_success("dialogue")
    records = [
        {
            "seed": s,
            "curve": [{"step": 10, "normalised_score": 10.0 * s}],
            "last_score": 10.0 * s,
            "best_score": 10.0 * s,
            "last_success_rate": None,
        }
        for s in range(2)
    ]
    row = summarise_method(records)
    assert row["last_mean"] == 5.0 and math.isnan(row["last_success_rate"])
    summary = {
        "env_id": "merlion/Recommender-v0",
        "settings": {"dataset": "d"},
        "behaviour_score": 20.0,
        "config": {"steps": 10, "eval_every": 10, "eval_episodes": 5, "encoder_steps": 5},
        "methods": {"bc": {**row, "last_success_rate": None}},
    }
    assert "| bc | 2 | 5.0 +- 63.5 | 5.0 +- 63.5 | - |" in markdown_table(summary)


def _tiny_maze_data(tmp_path, n=1500):
    data = collect("maze", "medium", 0.5, n, seed=0, env_overrides={"n_actuators": 6})
    save_dataset(data, tmp_path / "data")
    return data, str(tmp_path / "data")


def test_records_are_written_as_runs_finish_and_encoder_failures_are_recorded(tmp_path, monkeypatch):
    _, data_path = _tiny_maze_data(tmp_path)
    options = dict(eval_every=10, eval_episodes=2, encoder_steps=5, workers=1, dataset=data_path)

    def no_encoder(dataset_path, method_name, *args):
        raise RuntimeError(f"no encoder for {method_name}")

    monkeypatch.setattr(benchmark, "train_bench_encoder", no_encoder)
    summary = run_benchmark("maze", "rand1-cql,bc", 1, 10, tmp_path / "a", **options)
    assert summary["methods"]["bc"]["seeds"] == 1  # the other runs go on
    failed = summary["methods"]["rand1-cql"]["failed"]
    assert len(failed) == 1 and "encoder rand1-seed0" in failed[0]["error"] and "no encoder" in failed[0]["error"]
    monkeypatch.undo()
    events = []
    summary = run_benchmark(
        "maze", "rand1-cql,bc", 1, 10, tmp_path / "a", lambda e, i: events.append((e, i)), **options
    )
    assert [i["method"] for e, i in events if e == "run"] == ["rand1-cql"]  # the failed run is retried, bc kept
    assert summary["methods"]["rand1-cql"]["seeds"] == 1 and summary["methods"]["rand1-cql"]["failed"] == []
    # a record whose encoder had other settings (an older version's defaults) is stale: run again
    path = tmp_path / "a" / "runs" / "rand1-cql" / "seed0.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "encoder_settings": {"seed": 0, "dim": 7}}))
    events.clear()
    run_benchmark("maze", "rand1-cql,bc", 1, 10, tmp_path / "a", lambda e, i: events.append((e, i)), **options)
    assert [i["method"] for e, i in events if e == "run"] == ["rand1-cql"]

    # with one worker, each run's record is on disk before the next run starts: a run killed
    # mid-benchmark (Ctrl-C) keeps the finished ones, and a rerun resumes after them
    real_run_one, calls = benchmark.run_one, []

    def interrupted(*args):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run_one(*args)

    monkeypatch.setattr(benchmark, "run_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark("maze", "bc,dcql", 1, 10, tmp_path / "b", **options)
    assert (tmp_path / "b" / "runs" / "bc" / "seed0.json").exists()
    monkeypatch.setattr(benchmark, "run_one", real_run_one)
    events = []
    run_benchmark("maze", "bc,dcql", 1, 10, tmp_path / "b", lambda e, i: events.append((e, i)), **options)
    assert [i["method"] for e, i in events if e == "run"] == ["dcql"]


def test_scores_use_the_env_normalisers_and_the_summary_shows_them(tmp_path):
    data, _ = _tiny_maze_data(tmp_path)
    # a dataset whose metadata carries other normalisers (another env version, an import)
    stale = dataclasses.replace(data, meta=dataclasses.replace(data.meta, expert_return=500.0))
    save_dataset(stale, tmp_path / "stale")
    summary = run_benchmark(
        "maze",
        "bc",
        1,
        10,
        tmp_path / "out",
        dataset=str(tmp_path / "stale"),
        eval_every=10,
        eval_episodes=2,
        workers=1,
    )
    expert, random = env_normalisers("maze", {"n_actuators": 6})
    assert expert != 500.0 and summary["normalisers"]["expert_return"] == expert
    assert summary["normalisers"]["random_return"] == random and not summary["normalisers"]["dataset_agrees"]
    returns = load_dataset(tmp_path / "stale").episode_returns()
    assert summary["behaviour_score"] == pytest.approx(100 * (returns.mean() - random) / (expert - random))
    readme = (tmp_path / "out" / "README.md").read_text()
    assert f"expert return {expert:.2f}, random return {random:.2f}" in readme
    assert "The dataset's metadata says 500.00" in readme
    assert np.isfinite(summary["methods"]["bc"]["last_success_rate"])  # the maze defines success


def test_bad_device_is_one_clear_error_before_any_run(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="'gpu' is not a device"):
        run_benchmark("maze", "bc", 1, 10, tmp_path, device="gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        run_benchmark("maze", "bc", 1, 10, tmp_path, device="cuda")
    assert not (tmp_path / "work").exists()


def test_a_pool_keeps_at_most_workers_encoders_in_flight(tmp_path, monkeypatch):
    """With workers > 1, encoders are submitted in the runs' order, at most ``workers`` at a time,
    so runs start while later encoders still wait (not after every encoder of the benchmark)."""
    import concurrent.futures

    from merlion_core.benchmark import runner as benchmark

    submissions = []

    class RecordingPool(concurrent.futures.ThreadPoolExecutor):
        def __init__(self, max_workers, mp_context=None):
            super().__init__(max_workers=max_workers)
            self.futures = []

        def submit(self, fn, *args, **kwargs):
            in_flight = sum(1 for name, f in self.futures if name == "train_bench_encoder" and not f.done())
            submissions.append((fn.__name__, in_flight))
            future = super().submit(fn, *args, **kwargs)
            self.futures.append((fn.__name__, future))
            return future

    monkeypatch.setattr(benchmark.concurrent.futures, "ProcessPoolExecutor", RecordingPool)
    data_path = tmp_path / "data"
    save_dataset(collect("maze", "medium", 0.5, 1000, seed=0, env_overrides={"n_actuators": 6}), data_path)
    summary = run_benchmark(
        "maze",
        "rand1-cql,rand2-cql",
        3,
        4,
        tmp_path / "out",
        eval_every=4,
        eval_episodes=1,
        encoder_steps=2,
        workers=2,
        dataset=str(data_path),
    )
    assert all(summary["methods"][m]["seeds"] == 3 for m in ("rand1-cql", "rand2-cql"))
    encoders = [in_flight for name, in_flight in submissions if name == "train_bench_encoder"]
    assert len(encoders) == 6 and max(encoders) < 2  # a new encoder only while fewer than 2 train
    names = [name for name, _ in submissions]
    assert names.index("run_one") < len(names) - 1 - names[::-1].index("train_bench_encoder")


def test_a_dataset_is_recognised_by_its_content_not_its_path(tmp_path, monkeypatch):
    import shutil

    data_path = tmp_path / "data"
    save_dataset(collect("maze", "medium", 0.5, 1000, seed=0, env_overrides={"n_actuators": 6}), data_path)
    out = tmp_path / "out"
    events = []
    options = dict(eval_every=10, eval_episodes=2, encoder_steps=5, workers=1)

    def runs(dataset):
        events.clear()
        run_benchmark(
            "maze",
            "bc,rand1-cql",
            1,
            10,
            out,
            lambda event, info: events.append((event, info)),
            dataset=str(dataset),
            **options,
        )
        return sorted(info["method"] for event, info in events if event == "run")

    assert runs(data_path) == ["bc", "rand1-cql"]
    encoder_weights = out / "work" / "encoders" / "rand1-seed0" / "weights.pt"
    trained_at = encoder_weights.stat().st_mtime_ns
    # the same bytes at another path, or the same folder by a relative path: nothing is trained again
    shutil.copytree(data_path, tmp_path / "copy")
    assert runs(tmp_path / "copy") == []
    monkeypatch.chdir(tmp_path)
    assert runs(Path("data")) == []
    assert encoder_weights.stat().st_mtime_ns == trained_at
    # a record written before the digest (path only, relative to where it ran) still matches its dataset
    record_file = out / "runs" / "bc" / "seed0.json"
    record = json.loads(record_file.read_text())
    record["settings"].pop("dataset_sha256")
    record["settings"]["dataset"] = "data"
    record_file.write_text(json.dumps(record))
    assert runs(data_path) == []
    # other data (another seed) trains every run and the encoder again
    other = tmp_path / "other"
    save_dataset(collect("maze", "medium", 0.5, 1000, seed=1, env_overrides={"n_actuators": 6}), other)
    assert runs(other) == ["bc", "rand1-cql"]
    assert encoder_weights.stat().st_mtime_ns != trained_at


def test_merlion_cql_before_trains_latent_cql_with_the_earlier_settings(tmp_path):
    from merlion_core.benchmark.runner import BenchConfig, run_one, train_bench_encoder

    data_path = tmp_path / "data"
    save_dataset(collect("maze", "medium", 0.5, 500, seed=0, env_overrides={"n_actuators": 4}), data_path)
    encoder = train_bench_encoder(str(data_path), "merlion-cql", 0, 5, str(tmp_path / "encoder"), "cpu")
    config = BenchConfig(seeds=1, steps=4, eval_every=4, eval_episodes=1)
    for name, backup, samples in (("merlion-cql-before", True, "box"), ("merlion-cql", False, "both")):
        record = run_one(str(data_path), name, 1, config, encoder, str(tmp_path / name))
        agent_config = json.loads((tmp_path / name / "config.json").read_text())["config"]
        assert (agent_config["backup_entropy"], agent_config["cql_samples"], agent_config["seed"]) == (
            backup,
            samples,
            1,
        )
        assert agent_config["latent_normalise"] is (name == "merlion-cql")
        assert record["steps"] == 4
    assert bench_method("merlion-cql-before").representation == "merlion"


def test_a_run_of_other_agent_settings_is_out_of_date():
    from merlion_core.benchmark.runner import BenchConfig, agent_settings, agent_settings_match

    config = BenchConfig(seeds=1, steps=10)
    cql, dcql, peer = bench_method("merlion-cql"), bench_method("dcql"), bench_method("d3rlpy-dcql")
    current = agent_settings(cql, 0, config)
    assert current["seed"] == 0 and current["backup_entropy"] is False and agent_settings(peer, 0, config) is None
    assert agent_settings_match({"agent_settings": current}, cql, 0, config)
    assert not agent_settings_match({"agent_settings": {**current, "backup_entropy": True}}, cql, 0, config)
    # records from before agent settings were kept: latent CQL / BCQ defaults changed since, raw ones did not
    assert not agent_settings_match({}, cql, 0, config)
    assert agent_settings_match({}, dcql, 0, config) and agent_settings_match({}, peer, 0, config)


def test_refresh_summary_rewrites_the_table_from_the_records(tmp_path):
    from merlion_core.benchmark.report import refresh_summary, write_run_record

    settings = {"env_id": "merlion/Maze-v0", "config": {"steps": 30}, "dataset": "d"}
    for seed, scores in enumerate(([10.0, 20.0, 60.0], [0.0, 40.0, 20.0])):
        curve = [{"step": 10 * (i + 1), "normalised_score": s} for i, s in enumerate(scores)]
        write_run_record(
            tmp_path,
            {
                "method": "bc",
                "seed": seed,
                "curve": curve,
                "last_score": scores[-1],
                "best_score": max(scores),
                "last_success_rate": None,
                "settings": settings,
            },
        )
    reference = {
        "behaviour": "medium",
        "curve": [{"step": 10, "normalised_score": 5.0}, {"step": 20, "normalised_score": 7.0}],
        "last_score": 7.0,
        "best_score": 7.0,
        "last_success_rate": None,
    }
    old = {
        "env_id": "merlion/Maze-v0",
        "settings": settings,
        "behaviour_score": 3.0,
        "normalisers": None,
        "behaviour_reference": reference,
        "methods": {"bc": {}},
        "config": {"seeds": 2, "steps": 30, "eval_every": 10, "eval_episodes": 5, "encoder_steps": 1},
    }
    (tmp_path / "summary.json").write_text(json.dumps(old))
    summary = refresh_summary(tmp_path)
    row = summary["methods"]["bc"]
    assert row["seeds"] == 2 and row["last_mean"] == 40.0 and row["last3_mean"] == pytest.approx(25.0)
    assert summary["behaviour_reference"]["last3_score"] == 6.0 and summary["config"] == old["config"]
    table = (tmp_path / "README.md").read_text()
    assert "| bc | 2 | 40.0 +- 254.1 | 25.0 +- 63.5 |" in table and "| 7.0 | 6.0 |" in table


def test_last3_interval_and_compare_intervals_by_hand():
    assert last3_interval({"last3_mean": 10.0, "last3_ci95": 2.5}) == (7.5, 12.5)
    assert last3_interval({"last3_mean": 10.0, "last3_ci95": math.nan}) is None  # one seed: no interval
    assert last3_interval({}) is None
    assert compare_intervals((7.5, 12.5), (1.0, 7.4)) == "above"
    assert compare_intervals((1.0, 7.4), (7.5, 12.5)) == "below"
    assert compare_intervals((7.5, 12.5), (1.0, 7.5)) == "not resolved"  # touching is not separated
    assert compare_intervals((7.5, 12.5), (35.06, 35.06)) == "below"  # against a point (the behaviour)
    assert compare_intervals(None, (0.0, 1.0)) == "not resolved"
