"""MERLION Studio app (placeholder until the app issue lands): environments and a dataset check.

Layout and widgets only; all work is done by merlion_core.
"""

import tempfile
from pathlib import Path

import streamlit as st

from merlion_core.cli import dataset_summary
from merlion_core.data.dataset import DatasetError
from merlion_core.data.io import detect_format, load_dataset
from merlion_core.envs import ENV_SPECS

MAX_UPLOAD_MB = 200

st.set_page_config(page_title="MERLION Studio", layout="wide")
st.title("MERLION Studio")
st.caption("Pseudometric-based action representations for offline RL with large discrete action sets.")

st.subheader("Environments")
st.table(
    [{"id": env_id, "short name": spec.short_name, "description": spec.description} for env_id, spec in ENV_SPECS.items()]
)

st.subheader("Check a logged dataset")
st.write("npz (D4RL keys), D4RL HDF5, d3rlpy HDF5; generate one with `merlion collect`.")
upload = st.file_uploader("Dataset file", type=None)
if upload is not None:
    if upload.size > MAX_UPLOAD_MB * 1024**2:
        st.error(f"{upload.name}: larger than {MAX_UPLOAD_MB} MB")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "upload.bin"
            path.write_bytes(upload.getvalue())
            try:
                fmt = detect_format(path)
                summary = dataset_summary(load_dataset(path, format=fmt, mmap=False), fmt)
            except DatasetError as exc:
                st.error(str(exc).replace(str(path), upload.name))
            else:
                st.success(f"{upload.name}: valid {fmt} dataset")
                st.json(summary)
