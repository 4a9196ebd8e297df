"""Dataset-to-artifact pipelines: train and diagnose an encoder (``encoder``), train and evaluate an
agent (``agent``), warm starts and UMAP views of embeddings (``embeddings``), off-policy evaluation
of a saved agent (``ope``). They read and write folders; the numerics stay in the layers below."""
