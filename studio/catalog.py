"""What the app can open: datasets (data folder and collect jobs), encoders and agents (jobs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from studio import jobs_client, settings

DATASET_SUFFIXES = (".npz", ".h5", ".hdf5")


@dataclass(frozen=True)
class Entry:
    """One openable thing: a label for menus, its path, and facts for filtering."""

    label: str
    path: str
    kind: str  # dataset, encoder, agent
    method: str = ""  # representation method or algorithm
    job: int | None = None
    encoder: str | None = None  # an agent's encoder folder
    dataset: str | None = None


def stamp(path: str | Path) -> float:
    """A change stamp for caches: the newest mtime of the path and its direct children."""
    p = Path(path)
    if not p.exists():
        return 0.0
    times = [p.stat().st_mtime]
    if p.is_dir():
        times += [child.stat().st_mtime for child in p.iterdir()]
    return max(times)


def _is_dataset(p: Path) -> bool:
    if p.name.startswith("."):  # hidden: e.g. a copy being written beside a dataset (studio/simulator.py)
        return False
    if p.is_file():
        return p.suffix.lower() in DATASET_SUFFIXES
    return p.is_dir() and (
        (p / "meta.json").is_file() or (p / "data" / "metadata.json").is_file() or (p / "metadata.json").is_file()
    )


def datasets() -> list[Entry]:
    """Datasets in the data folder (and data/uploads), then those collect jobs produced."""
    found: list[Entry] = []
    root = settings.data_dir()
    for folder in (root, root / "uploads"):
        if folder.is_dir():
            for p in sorted(folder.iterdir()):
                if _is_dataset(p):
                    found.append(Entry(f"{p.name} ({folder.name}/)", str(p), "dataset"))
    for job in jobs_client.jobs("collect", "succeeded"):
        path = jobs_client.output_path(job)
        if path is not None and path.exists():
            found.append(Entry(f"job #{job.id}: {jobs_client.describe(job)}", str(path), "dataset", job=job.id))
    return found


def encoders() -> list[Entry]:
    out = []
    for job in jobs_client.jobs("train-encoder", "succeeded"):
        path = jobs_client.output_path(job)
        if path is not None and path.exists():
            out.append(
                Entry(
                    f"#{job.id} {jobs_client.describe(job)}",
                    str(path),
                    "encoder",
                    method=str(job.config.get("method")),
                    job=job.id,
                    dataset=job.config.get("dataset"),
                )
            )
    return out


def preferred_encoder(entries: list[Entry]) -> str:
    """The newest MERLION encoder's path (the newest of any method when there is none)."""
    merlion = [e.path for e in entries if e.method.startswith("merlion")]
    return (merlion or [e.path for e in entries])[-1]


def agents() -> list[Entry]:
    out = []
    for job in jobs_client.jobs("train-agent", "succeeded"):
        path = jobs_client.output_path(job)
        if path is not None and path.exists():
            out.append(
                Entry(
                    f"#{job.id} {jobs_client.describe(job)}",
                    str(path),
                    "agent",
                    method=str(job.config.get("algo")),
                    job=job.id,
                    encoder=job.config.get("encoder"),
                    dataset=job.config.get("dataset"),
                )
            )
    return out
