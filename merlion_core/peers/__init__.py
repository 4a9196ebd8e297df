"""Peer libraries run side by side with ours: the same datasets, gradient steps and evaluation code.

Optional extras only: each peer module imports its library lazily, so ``merlion_core`` imports
without them (``d3rlpy_peer``: d3rlpy 2.8.1 in its own virtualenv, because of its gymnasium pin).
"""
