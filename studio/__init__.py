"""MERLION Studio's app layer: everything the Streamlit pages share.

Layers (one direction): merlion_core <- studio <- pages/app.py. Only ``studio.page``,
``studio.loaders`` and ``studio.forms`` import streamlit; the rest (jobs adapter, chains, the
explorer's numerics, charts, uploads, PNG) is plain Python and tested without a server.
"""
