"""Action representations: MERLION and the baselines, behind one interface."""
