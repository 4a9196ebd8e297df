"""The recommender environment: RecSim interest_evolution with the MERLION paper's changes (A.4)."""
