"""MERLION Studio core library: environments, datasets, representations, offline RL.

This package never imports streamlit; the app lives in app.py and pages/.
"""

__version__ = "0.1.0"
