"""The benchmark: method names, statistics by hand, and a tiny end-to-end run that resumes."""

from __future__ import annotations

import json
import math

import pytest
import torch

from merlion_core.bench_report import mean_ci95, summarise_method
from merlion_core.benchmark import PAPER_METHODS, bench_method, expand_methods, run_benchmark
from merlion_core.data.collect import collect
from merlion_core.data.io import save_dataset


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_method_names():
    ablation = bench_method("merlion-p0.3-cql")
    assert (ablation.representation, dict(ablation.representation_overrides), ablation.algo) == ("merlion", {"p": 0.3}, "cql")
    assert bench_method("dcql").representation is None
    assert bench_method("transition-bcq").algo == "bcq"
    assert bench_method("d3rlpy-dbcq").peer
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
        curve = [{"step": 10 * (i + 1), "normalised_score": s, "mean_return": s, "success_rate": 0.5}
                 for i, s in enumerate(scores)]
        return {"seed": seed, "curve": curve, "last_score": scores[-1], "best_score": max(scores),
                "last_success_rate": 0.5, "train_seconds": 2.0}

    rows = summarise_method([record(0, [10.0, 30.0, 20.0]), record(1, [20.0, 40.0, 40.0]),
                             {"seed": 2, "curve": [], "last_score": None, "best_score": None, "error": "boom"}])
    assert rows["seeds"] == 2 and rows["failed"] == [{"seed": 2, "error": "boom"}]
    assert rows["last_mean"] == 30.0 and rows["best_mean"] == 35.0
    assert [p["mean"] for p in rows["curve"]] == [15.0, 35.0, 30.0]


def test_tiny_benchmark_runs_and_resumes(tmp_path, monkeypatch):
    monkeypatch.delenv("MERLION_D3RLPY_PYTHON", raising=False)
    # a 64-action maze keeps the planner behind the normalisers and the evaluation cheap
    data_path = tmp_path / "data"
    save_dataset(collect("maze", "medium", 0.5, 2000, seed=0, env_overrides={"n_actuators": 6}), data_path)
    events = []
    options = dict(eval_every=15, eval_episodes=3, encoder_steps=20, workers=1, dataset=str(data_path))
    summary = run_benchmark("maze", "bc,rand1-cql,d3rlpy-bc", 2, 30, tmp_path,
                            lambda event, info: events.append((event, info)), **options)
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
    assert (tmp_path / "curves.svg").read_text().startswith("<svg")
    # encoders are trained once per (representation, seed) and shared
    assert sorted(p.name for p in (tmp_path / "work" / "encoders").iterdir()) == ["rand1-seed0", "rand1-seed1"]

    # a second call finds every finished run and trains nothing (failed runs are retried), also
    # when it is executed differently (workers, device are not part of a run's settings)
    events.clear()
    run_benchmark("maze", "bc,rand1-cql", 2, 30, tmp_path, lambda event, info: events.append((event, info)),
                  **{**options, "workers": 2, "device": "cpu"})
    assert [e for e, _ in events if e == "run"] == []
    assert "workers" not in json.loads((tmp_path / "summary.json").read_text())["settings"]["config"]
    # a setting that changes what is computed (the evaluation) does rerun
    events.clear()
    run_benchmark("maze", "bc", 1, 30, tmp_path, lambda event, info: events.append((event, info)),
                  **{**options, "eval_episodes": 2})
    assert [e for e, _ in events if e == "run"] == ["run"]


def test_encoders_are_reused_only_with_the_same_settings(tmp_path):
    from merlion_core.benchmark import train_bench_encoder

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
