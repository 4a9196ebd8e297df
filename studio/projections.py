"""UMAP views of embeddings with d > 2: jobs of the runner's ``umap`` kind (merlion_core.jobs.spec.UmapJob).

One job per (encoder, dataset, state row, n_neighbors, min_dist) at a fixed seed; the jobs store
is the cache: a request that has a queued, running or succeeded job is not submitted again, and
its coordinates are read from that job's artifact (merlion_core.projection.load_projection).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from merlion_core.config import to_dict
from merlion_core.jobs.spec import JobSpec, UmapJob, validate
from merlion_core.jobs.store import JobRecord
from merlion_core.projection import load_projection
from studio import jobs_client

KIND = "umap"
TAG = "studio:umap"
SEED = 0
"""UMAP's random_state for the app's views (same request, same picture)."""


@dataclass(frozen=True)
class Request:
    """What a UMAP view shows: every action's embedding by ``encoder`` at dataset row ``row``."""

    encoder: str
    dataset: str
    row: int
    n_neighbors: int = 15
    min_dist: float = 0.1

    def config(self) -> dict[str, Any]:
        """The job's config, validated by the runner (one-line ValueError; absolute paths)."""
        job = UmapJob(
            encoder=self.encoder,
            dataset=self.dataset,
            rows=(int(self.row),),
            n_neighbors=int(self.n_neighbors),
            min_dist=float(self.min_dist),
        )
        return validate(JobSpec(KIND, to_dict(job), SEED)).config


def latest(request: Request) -> JobRecord | None:
    """The newest job for exactly this request (any status), or None."""
    config = request.config()
    found = [job for job in jobs_client.jobs(KIND) if job.config == config and job.seed == SEED]
    return found[-1] if found else None


def submit(request: Request) -> int:
    """The id of a job for this request: the queued, running or succeeded one already there, else a
    new one (a supervisor starts on demand)."""
    job = latest(request)
    if job is not None and job.status in (*jobs_client.ACTIVE, "succeeded"):
        return job.id
    return jobs_client.submit(KIND, request.config(), SEED, tag=TAG)


def running(request: Request) -> bool:
    job = latest(request)
    return job is not None and jobs_client.is_active(job)


def archive(job: JobRecord) -> str | None:
    """The .npz a succeeded umap job wrote, or None."""
    if job.status != "succeeded" or not job.result or not job.result.get("projection"):
        return None
    return str(job.result["projection"])


def coordinates(path: str, n_actions: int) -> np.ndarray:
    """f32[A, 2]: the UMAP coordinates of the job's single state; one-line error when the file does
    not fit the encoder."""
    coords, _, _ = load_projection(path)
    if coords.shape[0] != 1 or coords.shape[1] != n_actions:
        raise ValueError(
            f"{path}: holds {coords.shape[0]} state(s) x {coords.shape[1]} actions; expected 1 x {n_actions}"
        )
    return coords[0]


def status_text(job: JobRecord) -> str:
    text = f"UMAP job #{job.id}: {job.status}"
    if job.step is not None and job.total:
        text += f" ({('loading', 'projecting', 'done')[min(int(job.step), 2)]})"
    return text + (f": {job.exit_reason}" if job.exit_reason else "")
