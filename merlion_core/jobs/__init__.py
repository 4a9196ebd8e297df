"""Background jobs: a job spec, a SQLite store, one OS process per job, a supervisor, sweeps, Ray.

``store`` (the database and the runs folder: every file format of this package), ``spec`` (job
kinds and their configs), ``runner`` (a kind -> the pipeline entry point), ``worker`` (one job in
its own process), ``supervisor`` (bounded concurrency, dead-worker detection, adoption after a
restart), ``sweep`` (a grid of runs), ``ray_backend`` (the same jobs on Ray). See docs/jobs.md.
"""
