"""Reading the MultiWOZ data files (the I/O side of the dialogue environment).

The dialogue environment needs the public MultiWOZ 2.1 data files that ConvLab-2 ships in its
``data/multiwoz`` folder: the seven domain databases ``db/*_db.json``, the user-goal model
``goal_model.json``, the slot vocabularies ``ontology.json`` and ``value_set.json``, and the
counts of composite system acts ``da_slot_cnt.json``; the act-coverage check also reads the
real dialogues ``val.json.zip`` and ``test.json.zip``. None of them is part of MERLION Studio:
the folder comes from the ``data_dir`` argument (the env config field / CLI option) or, when
that is empty, from the ``MERLION_MULTIWOZ_DIR`` environment variable.

This module only reads and validates; it returns plain parsed data (:class:`MultiWOZData`,
lists of act triples). Everything numeric (tables, the simulator) lives in
``merlion_core.envs.dialogue``.
"""

from __future__ import annotations

import functools
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_VAR = "MERLION_MULTIWOZ_DIR"
PUBLIC_SOURCE = "https://github.com/thu-coai/ConvLab-2/tree/master/data/multiwoz"
DOMAINS = ("attraction", "hospital", "hotel", "police", "restaurant", "taxi", "train")
GOAL_MODEL_KEYS = (
    "ind_slot_dist",
    "ind_slot_value_dist",
    "domain_ordering_dist",
    "book_dist",
    "slots_num_dist",
    "slots_combination_dist",
)
REQUIRED_FILES = (
    "goal_model.json",
    "ontology.json",
    "value_set.json",
    "da_slot_cnt.json",
    *(f"db/{d}_db.json" for d in DOMAINS),
)
MAX_JSON_BYTES = 64 * 1024**2
MAX_DIALOGUES = 20_000

ActTriple = tuple[str, str, str]  # (domain, intent, slot) as in the corpus: ("Hotel", "Inform", "Area")


class MultiWOZDataMissing(FileNotFoundError):
    """The MultiWOZ folder is not set, does not exist, or lacks a required file."""


class MultiWOZDataError(ValueError):
    """A MultiWOZ file exists but does not have the expected structure."""


@dataclass(frozen=True, eq=False)
class MultiWOZData:
    """The parsed files the dialogue environment is built from (strings and counts only)."""

    root: str
    """Folder the files were read from."""
    db: dict[str, Any]
    """domain -> list of entity dicts (taxi: a dict of value lists)."""
    goal_model: dict[str, Any]
    """goal_model.json: the distributions ConvLab-2's goal generator samples from."""
    ontology: dict[str, tuple[str, ...]]
    """ontology.json: 'domain-slot' -> known values (belief-state vocabulary)."""
    value_set: dict[str, dict[str, tuple[str, ...]]]
    """value_set.json: domain -> slot -> values found in the database."""
    composite_counts: tuple[tuple[str, int], ...]
    """da_slot_cnt.json: (composite system act, corpus count), in file order."""


def resolve_data_dir(data_dir: str = "") -> Path:
    """The MultiWOZ folder: ``data_dir`` if given, else $MERLION_MULTIWOZ_DIR; checked to hold the files."""
    raw = data_dir or os.environ.get(ENV_VAR, "")
    if not raw:
        raise MultiWOZDataMissing(
            f"dialogue env: no MultiWOZ data folder: set the {ENV_VAR} environment variable (or the env "
            f"config field data_dir, CLI --multiwoz-dir) to a folder with db/*_db.json, goal_model.json, "
            f"ontology.json, value_set.json and da_slot_cnt.json (public data: {PUBLIC_SOURCE})"
        )
    root = Path(raw).expanduser()
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if missing:
        where = f"{ENV_VAR}={raw}" if not data_dir else f"data_dir={raw}"
        raise MultiWOZDataMissing(
            f"dialogue env: MultiWOZ folder {root} ({where}) lacks {', '.join(missing[:4])}"
            f"{' ...' if len(missing) > 4 else ''} (public data: {PUBLIC_SOURCE})"
        )
    return root.resolve()


def _read_json(path: Path) -> Any:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise MultiWOZDataError(f"{path}: {size} bytes exceeds the {MAX_JSON_BYTES}-byte cap")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MultiWOZDataError(f"{path}: not valid JSON ({exc})") from None


def _expect(condition: bool, path: Path, what: str) -> None:
    if not condition:
        raise MultiWOZDataError(f"{path}: {what}")


def _read_db(root: Path, domain: str) -> Any:
    path = root / "db" / f"{domain}_db.json"
    data = _read_json(path)
    if domain == "taxi":
        _expect(isinstance(data, dict), path, "expected a JSON object (taxi colours, types, phone)")
        return data
    _expect(
        isinstance(data, list) and all(isinstance(e, dict) for e in data), path, "expected a list of entity objects"
    )
    _expect(len(data) >= 1, path, "no entities")
    return [{str(k): v for k, v in entity.items()} for entity in data]


def _read_goal_model(root: Path) -> dict[str, Any]:
    path = root / "goal_model.json"
    data = _read_json(path)
    _expect(isinstance(data, dict), path, "expected a JSON object")
    missing = [k for k in GOAL_MODEL_KEYS if k not in data]
    _expect(not missing, path, f"missing key(s) {', '.join(missing)}")
    for key in ("ind_slot_dist", "ind_slot_value_dist", "book_dist", "slots_num_dist", "slots_combination_dist"):
        _expect(
            isinstance(data[key], dict) and set(data[key]) <= set(DOMAINS),
            path,
            f"{key}: expected an object keyed by the domains {', '.join(DOMAINS)}",
        )
    orderings = data["domain_ordering_dist"]
    _expect(
        isinstance(orderings, list)
        and all(
            isinstance(o, list)
            and len(o) == 2
            and isinstance(o[0], list)
            and set(o[0]) <= set(DOMAINS)
            and isinstance(o[1], (int, float))
            for o in orderings
        ),
        path,
        "domain_ordering_dist: expected a list of [[domain, ...], probability]",
    )
    return data


def _read_composites(root: Path) -> tuple[tuple[str, int], ...]:
    path = root / "da_slot_cnt.json"
    data = _read_json(path)
    _expect(isinstance(data, dict), path, "expected an object of composite act -> count")
    out = []
    for key, count in data.items():
        _expect(isinstance(count, int) and count >= 0, path, f"{key!r}: count must be a non-negative int")
        atoms = key.split(";")
        _expect(
            all(len(a.split("-")) == 4 for a in atoms),
            path,
            f"{key[:60]!r}: every act must read Domain-Intent-Slot-Value",
        )
        out.append((key, count))
    return tuple(out)


@functools.lru_cache(maxsize=4)
def _load(root: str) -> MultiWOZData:
    path = Path(root)
    ontology = _read_json(path / "ontology.json")
    _expect(
        isinstance(ontology, dict) and all(isinstance(v, list) for v in ontology.values()),
        path / "ontology.json",
        "expected an object of 'domain-slot' -> list of values",
    )
    value_set = _read_json(path / "value_set.json")
    _expect(
        isinstance(value_set, dict) and all(isinstance(v, dict) for v in value_set.values()),
        path / "value_set.json",
        "expected an object of domain -> slot -> values",
    )
    return MultiWOZData(
        root=root,
        db={d: _read_db(path, d) for d in DOMAINS},
        goal_model=_read_goal_model(path),
        ontology={k: tuple(str(x) for x in v) for k, v in ontology.items()},
        value_set={
            d: {s: tuple(str(x) for x in vals) for s, vals in slots.items() if isinstance(vals, list)}
            for d, slots in value_set.items()
        },
        composite_counts=_read_composites(path),
    )


def load_multiwoz(data_dir: str = "") -> MultiWOZData:
    """Read and validate the MultiWOZ files (cached per folder)."""
    return _load(str(resolve_data_dir(data_dir)))


def turn_act_triples(dialog_act: Any) -> list[ActTriple]:
    """The (domain, intent, slot) triples of one annotated turn, in annotation order.

    ``dialog_act`` is MultiWOZ's {"Domain-Intent": [[slot, value], ...]}; a turn without
    annotation gives an empty list.
    """
    if not isinstance(dialog_act, dict):
        return []
    triples = []
    for key, pairs in dialog_act.items():
        if not isinstance(key, str) or key.count("-") != 1 or not isinstance(pairs, list):
            continue
        domain, intent = key.split("-")
        for pair in pairs:
            if isinstance(pair, list) and pair:
                triples.append((domain, intent, str(pair[0])))
    return triples


def read_system_turns(data_dir: str = "", splits: tuple[str, ...] = ("val", "test")) -> list[list[ActTriple]]:
    """The act triples of every system turn of the real dialogues in ``{split}.json.zip``.

    MultiWOZ logs alternate user (even index) and system (odd index) turns.
    """
    root = resolve_data_dir(data_dir)
    turns: list[list[ActTriple]] = []
    for split in splits:
        path = root / f"{split}.json.zip"
        if not path.is_file():
            raise MultiWOZDataMissing(f"dialogue data: {path} not found (public data: {PUBLIC_SOURCE})")
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if m.filename.endswith(".json")]
            _expect(len(members) == 1, path, "expected exactly one .json member")
            _expect(members[0].file_size <= MAX_JSON_BYTES, path, f"member exceeds {MAX_JSON_BYTES} bytes")
            try:
                dialogues = json.loads(archive.read(members[0]).decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise MultiWOZDataError(f"{path}: not valid JSON ({exc})") from None
        _expect(
            isinstance(dialogues, dict) and len(dialogues) <= MAX_DIALOGUES,
            path,
            f"expected an object of at most {MAX_DIALOGUES} dialogues",
        )
        for dialogue in dialogues.values():
            log = dialogue.get("log", []) if isinstance(dialogue, dict) else []
            _expect(isinstance(log, list), path, "a dialogue's log must be a list")
            turns.extend(
                turn_act_triples(t.get("dialog_act")) for i, t in enumerate(log) if i % 2 == 1 and isinstance(t, dict)
            )
    return turns
