"""The Streamlit app, driven headless with AppTest."""

import io
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def test_app_renders_the_environments():
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "MERLION Studio"
    table_text = str(at.table[0].value)
    assert "merlion/Maze-v0" in table_text and "merlion/MultiStepMaze-v0" in table_text


def _npz_bytes(**fields) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **fields)
    return buf.getvalue()


@pytest.mark.parametrize("valid", [True, False])
def test_app_checks_an_uploaded_dataset(valid):
    n = 8
    fields = dict(
        observations=np.zeros((n, 3), np.float32), actions=np.arange(n, dtype=np.int64),
        rewards=np.ones(n, np.float32), next_observations=np.zeros((n, 3), np.float32),
        terminals=np.array([0, 0, 0, 1, 0, 0, 0, 1], bool), timeouts=np.zeros(n, bool),
        n_actions=np.array(16),
    )
    if not valid:
        fields["rewards"] = np.array([1, 1, np.nan, 1, 1, 1, 1, 1], np.float32)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.get("file_uploader")[0].set_value(("logged.npz", _npz_bytes(**fields), "application/octet-stream"))
    at.run()
    assert not at.exception
    if valid:
        assert "valid npz dataset" in at.success[0].value
    else:
        message = at.error[0].value
        assert "rewards" in message and "nan" in message.lower()
        assert message.startswith("logged.npz") and "/tmp" not in message  # the user's name, not ours
