"""The app in a real browser (Debian chromium driven by playwright): every page by its direct URL
on a fresh server (with a screenshot each, in test-artifacts/screenshots/), an upload and its
summary, a short training job whose live curve gains points, and the p slider re-forming the
scatter. A real server, supervisor and warm-start worker run here: these tests are slow."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow

from browser_support import REPO, browser, open_page, scatter_data, server, wait_ready  # noqa: E402

SHOTS = REPO / "test-artifacts" / "screenshots"
PAGES = [
    ("", "Start with the demo"),
    ("data", "Generate"),
    ("train", "Training jobs"),
    ("embeddings", "Observation"),
    ("pseudometric", "Spearman (this state)"),
    ("runs", "Benchmark tables"),
]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    from studio_fixture import build_home

    return build_home(tmp_path_factory.mktemp("browser-home"))


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size({"width": 1400, "height": 2400})
    time.sleep(0.8)  # let plotly finish drawing
    page.screenshot(path=str(SHOTS / f"{name}.png"))
    page.set_viewport_size({"width": 1400, "height": 1000})


def test_every_page_by_direct_url_on_a_fresh_server(home):
    with server(home["home"]) as url, browser() as page:
        for path, text in PAGES:
            open_page(page, f"{url}/{path}", text, timeout=120)
            assert not page.locator('[data-testid="stException"]').count(), f"/{path} shows an exception"
            shot(page, path or "home")
    assert len(list(SHOTS.glob("*.png"))) >= len(PAGES)


def test_upload_then_summary(home, tmp_path):
    n = 500
    buf = io.BytesIO()
    np.savez(
        buf,
        observations=np.zeros((n, 3), np.float32),
        actions=np.arange(n) % 37,
        rewards=np.ones(n, np.float32),
        next_observations=np.zeros((n, 3), np.float32),
        terminals=np.arange(n) % 50 == 49,
        timeouts=np.zeros(n, bool),
        n_actions=np.array(64),
    )
    upload = tmp_path / "browser upload.npz"
    upload.write_bytes(buf.getvalue())
    with server(home["home"]) as url, browser() as page:
        open_page(page, f"{url}/data", "Generate")
        page.get_by_role("tab", name="Upload").click()
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(upload))
        page.get_by_text("valid npz dataset").wait_for(timeout=60_000)
        wait_ready(page)
        page.get_by_role("tab", name="Summary").click()
        metric = page.locator('[data-testid="stMetric"]', has_text="Transitions")
        metric.get_by_text("500").wait_for(timeout=30_000)
        assert page.locator('[data-testid="stMetric"]', has_text="Episodes").get_by_text("10").count()
        shot(page, "data-summary-after-upload")
    assert (home["home"] / "data" / "uploads" / "browser_upload.npz").is_file()


def _curve_points(page) -> int:
    return page.evaluate("""() => { const plots = [...document.querySelectorAll('.js-plotly-plot')]
        .filter(p => p.layout && p.layout.xaxis && p.layout.xaxis.title &&
                String(p.layout.xaxis.title.text || p.layout.xaxis.title).includes('gradient step'));
        if (!plots.length) return 0;
        const traces = plots[0]._fullData || plots[0].data;
        return Math.max(...traces.filter(t => t.mode === 'lines+markers' && String(t.name).includes('160 steps'))
                        .map(t => (t.x || []).length), 0); }""")


def test_short_training_job_and_its_live_curve(home):
    with server(home["home"]) as url, browser() as page:
        open_page(page, f"{url}/train", "Training jobs")
        page.get_by_role("tab", name="Agent").click()
        for label, value in (("steps", "160"), ("eval_every", "40"), ("eval_episodes", "2")):
            box = page.locator(f'input[aria-label="{label}"]:visible')
            box.fill(value)
            box.press("Enter")
            wait_ready(page)
        page.get_by_text("cql settings").click()
        box = page.locator('input[aria-label="batch_size"]:visible')
        box.fill("32")
        box.press("Enter")
        wait_ready(page)
        page.get_by_role("button", name="Train agent").click()
        page.get_by_text("Queued cql").wait_for(timeout=30_000)
        open_page(page, f"{url}/runs", "Returns")
        seen, deadline = [], time.monotonic() + 300
        while time.monotonic() < deadline:
            points = _curve_points(page)
            if not seen or points != seen[-1]:
                seen.append(points)
            if points >= 4:
                break
            time.sleep(1.0)  # the page polls by itself (st.fragment run_every); no reload here
        shot(page, "runs-live-curve")
    assert seen[-1] >= 4 and len(set(seen)) >= 2, f"the live curve did not gain points: {seen}"


def test_p_slider_reforms_the_scatter(home):
    with server(home["home"]) as url, browser() as page:
        open_page(page, f"{url}/embeddings", "Observation", timeout=120)
        page.locator('[data-testid="stPlotlyChart"]').nth(1).wait_for()
        time.sleep(8)  # the resident warm-start worker loads torch meanwhile
        before = scatter_data(page, 1)
        slider = page.get_by_role("slider").first
        slider.focus()
        started = time.perf_counter()
        slider.press("ArrowRight")
        page.get_by_text("step 60/60, succeeded").wait_for(timeout=60_000)
        seconds = time.perf_counter() - started
        after = scatter_data(page, 1)
        shot(page, "embeddings-after-p-slider")
    assert before is not None and after is not None
    assert np.concatenate(before).shape == np.concatenate(after).shape
    assert not np.allclose(np.sort(np.concatenate(before)), np.sort(np.concatenate(after)))
    assert seconds < 30, seconds


def test_umap_view_of_a_d3_encoder(home):
    """d > 2: pick the d = 3 encoder side by side, press "Compute UMAP": a umap job runs under the
    supervisor (numba compiles on its first call: up to a minute) and its scatter appears with
    every action, beside the live PCA view."""
    from studio_fixture import ENV_OVERRIDES

    with server(home["home"]) as url, browser() as page:
        open_page(page, f"{url}/embeddings", "Observation", timeout=120)
        page.get_by_text("Side by side with").locator("xpath=ancestor::*[@data-testid='stSelectbox']").click()
        page.get_by_role("option").filter(has_text=f"#{home['jobs']['rand3']} ").click()
        wait_ready(page, "Compute UMAP", timeout=120)
        page.get_by_role("button", name="Compute UMAP").click()
        page.get_by_text("UMAP (n_neighbors 15, min_dist 0.1)").wait_for(timeout=240_000)
        wait_ready(page)
        charts = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')]
            .filter(p => p.data && p.data.some(t => t.type === 'scattergl'))
            .map(p => [((p._fullLayout || p.layout).title || {}).text || '',
                (p._fullData || p.data).filter(t => t.type === 'scattergl').reduce((n, t) => n + t.x.length, 0)])""")
        shot(page, "embeddings-umap")
    umap = [n for title, n in charts if "UMAP (" in title]
    pca = [n for title, n in charts if "d = 3 (PCA" in title]
    n_actions = 2 ** ENV_OVERRIDES["n_actuators"]
    assert umap and pca and umap[0] == pca[0] == n_actions, charts
