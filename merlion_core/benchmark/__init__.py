"""The benchmark: methods x seeds on one env (``runner``), the method table (``methods``) and its
results on disk: run records, summary, Markdown table and curves (``report``)."""
