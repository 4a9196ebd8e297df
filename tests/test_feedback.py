"""Feedback on everything that takes over a second (issue 26, item 5): evaluate's and collect's
progress hooks, what `merlion evaluate` and `merlion collect` say on stderr and when, the
Pseudometric page's spinners and status box, and the Home page's quick links that fit."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import streamlit
from streamlit.testing.v1 import AppTest

import merlion_core.data.collect as collect_module
import merlion_core.evaluation as evaluation
from merlion_core.cli.main import main
from merlion_core.data.collect import collect
from merlion_core.envs import make_model
from merlion_core.envs.behaviours import make_behaviour
from merlion_core.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]
SMALL_MAZE = {"n_actuators": 6}  # 64 actions


class Medium:
    """The medium behaviour as an agent: episodes of many different lengths."""

    def __init__(self) -> None:
        self.model = make_model("maze", SMALL_MAZE)
        self.policy, self.rng = make_behaviour(self.model, "medium"), np.random.default_rng(7)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.policy(obs, self.rng)


# ---------------------------------------------------------------------------- evaluate
def test_evaluate_progress_counts_finished_episodes_up_to_the_total():
    episodes = 40
    calls: list[tuple[int, int]] = []
    result = evaluate(Medium(), "maze", episodes, seed=3, env_overrides=SMALL_MAZE, progress=lambda *a: calls.append(a))
    assert result == evaluate(Medium(), "maze", episodes, seed=3, env_overrides=SMALL_MAZE)  # the hook changes nothing
    assert {total for _, total in calls} == {episodes}
    counts = [done for done, _ in calls]
    assert counts[0] == 0 and counts[-1] == episodes
    assert all(a < b for a, b in zip(counts, counts[1:], strict=False)), counts  # only ever grows
    # reported as they finish: after step t, the episodes of length <= t have ended (those that
    # run to the time limit end with the last step)
    max_steps = make_model("maze", SMALL_MAZE).max_steps
    finished = {int((result.lengths <= t).sum()) for t in range(max_steps)}
    assert counts == [0, *sorted(v for v in finished if 0 < v < episodes), episodes]
    assert len(counts) > 4  # the maze's episodes end at many different steps: many updates, not one at the end


# ---------------------------------------------------------------------------- merlion evaluate
def test_cli_evaluate_says_what_it_does_at_once_then_counts_episodes(studio_home, capsys, monkeypatch):
    """stderr carries an "evaluating" line before the first episode step and a bar that ends at
    the episode count; --quiet silences both; stdout keeps the result."""
    before_episodes: list[str] = []
    rollout = evaluation.rollout_episodes

    def watched(*args, **kwargs):
        before_episodes.append(capsys.readouterr().err)  # what the user saw before the episodes ran
        return rollout(*args, **kwargs)

    monkeypatch.setattr(evaluation, "rollout_episodes", watched)
    assert main(["evaluate", "--agent", studio_home["agent"], "--episodes", "7"]) == 0
    out = capsys.readouterr()
    assert len(before_episodes) == 1
    assert "evaluating the agent" in before_episodes[0] and studio_home["agent"] in before_episodes[0]
    assert "expert and random returns" in before_episodes[0]  # the normalisers: announced as they start
    assert "7/7" in out.err and "episode" in out.err  # the bar over episodes, finished
    assert "n_episodes: 7" in out.out

    assert main(["evaluate", "--agent", studio_home["agent"], "--episodes", "3", "--quiet", "--json"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == "" and '"n_episodes": 3' in quiet.out


# ---------------------------------------------------------------------------- collect
def test_collect_reports_its_setup_before_the_first_count():
    events: list[tuple] = []
    n = 1000
    collect(
        "maze",
        "medium",
        0.5,
        n,
        0,
        n_envs=64,
        env_overrides=SMALL_MAZE,
        progress=lambda done, total: events.append(("progress", done, total)),
        stage=lambda message: events.append(("stage", message)),
    )
    stages = [e for e in events if e[0] == "stage"]
    counts = [e[1:] for e in events if e[0] == "progress"]
    assert len(stages) == 2 and events[: len(stages)] == stages  # every preparation is said before any count
    assert "normalise" in stages[0][1] and "medium behaviour" in stages[1][1]
    assert counts[0] == (0, n) and counts[-1] == (n, n)  # 0 marks the start of the stepping itself
    assert all(a[0] <= b[0] for a, b in zip(counts, counts[1:], strict=False))


def test_cli_collect_starts_its_bar_after_the_slow_setup(tmp_path, capsys, monkeypatch):
    """The bar (and so its rate and ETA) starts once the normalisers and the behaviour's planner
    are ready: a bar started before them counted their seconds as collection time."""
    import tqdm

    log: list[tuple[str, float]] = []
    normalisers, behaviour = collect_module.env_normalisers, collect_module.make_behaviour

    def slow_behaviour(*args):
        time.sleep(0.3)  # a planner solving the env's true model
        built = behaviour(*args)
        log.append(("behaviour ready", time.monotonic()))
        return built

    def timed_normalisers(*args):
        value = normalisers(*args)
        log.append(("normalisers ready", time.monotonic()))
        return value

    class Bar(tqdm.tqdm):
        def __init__(self, *args, **kwargs):
            log.append(("bar", time.monotonic()))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(collect_module, "make_behaviour", slow_behaviour)
    monkeypatch.setattr(collect_module, "env_normalisers", timed_normalisers)
    monkeypatch.setattr(tqdm, "tqdm", Bar)
    out = tmp_path / "small"
    args = ["collect", "--env", "maze", "--env-config", '{"n_actuators": 6}', "--n", "2000", "--out", str(out)]
    assert main(args) == 0
    assert [name for name, _ in log] == ["normalisers ready", "behaviour ready", "bar"]
    err = capsys.readouterr().err
    assert err.index("collect: preparing") < err.index("2000/2000")  # said first, then the bar
    assert "medium behaviour" in err


# ---------------------------------------------------------------------------- the app
def page(name: str) -> AppTest:
    return AppTest.from_file(str(ROOT / "pages" / f"{name}.py"), default_timeout=120)


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.message for e in at.exception]


class Watch:
    """Wraps st.spinner / st.status: records each message and whether one is showing now."""

    def __init__(self, real) -> None:
        self.real, self.showing = real, 0
        self.messages: list[str] = []

    def __call__(self, text, *args, **kwargs):
        self.messages.append(text)
        return self._showing(self.real(text, *args, **kwargs))

    @contextlib.contextmanager
    def _showing(self, context):
        with context as inner:
            self.showing += 1
            try:
                yield inner
            finally:
                self.showing -= 1


def test_pseudometric_computes_and_draws_under_a_spinner_that_says_what(studio_env, monkeypatch):
    from studio import charts, explore, png

    spinner = Watch(streamlit.spinner)
    monkeypatch.setattr(streamlit, "spinner", spinner)
    seen: list[tuple[str, int]] = []

    def watched(name, fn):
        def run(*args, **kwargs):
            seen.append((name, spinner.showing))
            return fn(*args, **kwargs)

        monkeypatch.setattr(module_of[name], name, run)

    module_of = {"true_distances": explore, "state_diagnostics": explore, "matrix_png": png}
    for name, module in module_of.items():
        watched(name, getattr(module, name))
    monkeypatch.setattr(charts, "HEATMAP_MAX", 16)  # 64 actions: the PNG overviews as for 4096 actions
    streamlit.cache_data.clear()  # computed here, not taken from another test's cache
    at = page("pseudometric").run()
    no_exception(at)
    assert {name for name, _ in seen} == set(module_of)
    assert all(showing for _, showing in seen), seen  # nothing slow runs with no spinner on screen
    assert any("true pseudometric" in m and "64 x 64 action pairs" in m for m in spinner.messages), spinner.messages
    assert any("64 x 64 overviews" in m for m in spinner.messages), spinner.messages
    # a rerun (the zoom slider) takes the state's matrices, metrics and images from the cache
    seen.clear()
    at.slider(key="pm.block").set_value(8).run()
    no_exception(at)
    assert seen == []


def test_pseudometric_diagnostics_run_in_a_status_box_that_says_what_runs(studio_env, monkeypatch):
    import merlion_core.pipelines.encoder as encoder_pipeline

    status = Watch(streamlit.status)
    monkeypatch.setattr(streamlit, "status", status)
    showing: list[int] = []
    diagnose = encoder_pipeline.diagnose_encoder

    def watched(*args, **kwargs):
        showing.append(status.showing)
        return diagnose(*args, **kwargs)

    monkeypatch.setattr(encoder_pipeline, "diagnose_encoder", watched)
    at = page("pseudometric").run()
    at.button(key="pm.diagnose").click().run()
    no_exception(at)
    assert showing == [1]  # diagnose_encoder ran inside the status box
    assert len(status.messages) == 1
    assert "64 dataset states x 512 actions" in status.messages[0] and "seconds" in status.messages[0]
    box = at.status[0]
    assert box.label.startswith("Diagnostics done in ") and box.state == "complete"  # finished, and says so
    assert at.json  # the result is shown


def test_home_quick_links_wrap_at_their_own_width(studio_env):
    """Five equal columns cut "Data: generate or upload" and "Train encoders and agents" off at
    1400 px (with the sidebar) and every label at narrower widths; a wrapping row of links, each
    as wide as its label, shows them whole at any width."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()  # page links work under navigation
    no_exception(at)
    labels = {
        "Data: generate or upload",
        "Train encoders and agents",
        "Embeddings (Fig. 4)",
        "Pseudometric",
        "Runs and returns",
    }
    rows = [
        block
        for block in at.main.children.values()
        if getattr(block, "type", None) == "flex_container"
        and {getattr(child, "label", None) for child in block.children.values()} >= labels
    ]
    assert len(rows) == 1, "the quick links are one row of their own"
    row = rows[0]
    flex = row.proto.flex_container
    assert flex.direction == type(flex).Direction.HORIZONTAL and flex.wrap  # a row that wraps
    links = [child for child in row.children.values() if child.type == "page_link"]
    assert {link.label for link in links} == labels  # directly in the row: no fixed-width columns around them
    assert not any(link.proto.use_container_width for link in links)  # each as wide as its label
