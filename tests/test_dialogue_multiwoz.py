"""The dialogue env on the real MultiWOZ files (skipped, with the reason, when they are absent).

The folder comes from $MERLION_MULTIWOZ_DIR, else ../shared/data/multiwoz next to the
repository (where this project's CI has it). Every test here is marked ``multiwoz``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from dialogue_support import real_dir  # noqa: F401  (fixture)

from merlion_core.data.multiwoz_io import read_system_turns
from merlion_core.envs import make_model
from merlion_core.envs.behaviours import make_behaviour
from merlion_core.envs.dialogue.actions import act_coverage
from merlion_core.envs.dialogue.goals import sample_goals
from merlion_core.envs.dialogue.schema import DB_DOMAINS, match_entities, ontology_key, parse_minutes
from merlion_core.envs.rollout import rollout_episodes

pytestmark = pytest.mark.multiwoz


@pytest.fixture(scope="module")
def model(real_dir):  # noqa: F811
    return make_model("dialogue", {"data_dir": real_dir})


def _json(root: str, name: str):
    return json.loads((Path(root) / name).read_text())


def test_goals_only_use_values_of_the_ontology(model, real_dir):  # noqa: F811
    schema = model.schema
    value_set, ontology = _json(real_dir, "value_set.json"), _json(real_dir, "ontology.json")
    goals = sample_goals(schema, 3000, np.random.default_rng(0))
    checked = 0
    for values in (goals.initial, goals.final):
        for s, (domain, slot) in enumerate(schema.inform_slots):
            used = {schema.value_name(s, v) for v in np.unique(values[:, s]) if v > 0}
            is_book = bool(schema.inform_is_book[s])
            in_db = domain in DB_DOMAINS and not is_book and not (domain == "train" and slot in ("leaveAt", "arriveBy"))
            known = set(ontology.get(ontology_key(domain, slot, is_book), []))
            if in_db:  # database values: value_set.json (it spells one of them differently from the db)
                known |= set(value_set[domain][slot])
            assert used <= known, f"{domain}-{slot}: {sorted(used - known)[:5]} not in the ontology"
            checked += len(used)
    assert checked > 300  # the check saw a real spread of values
    for d in schema.tables:  # and the final constraints always match an entity
        rows = np.flatnonzero(goals.rank[:, d] >= 0)
        assert match_entities(schema, d, goals.final[rows]).any(axis=1).all(), schema.domains[d]
    train = schema.domains.index("train")
    rows = goals.rank[:, train] >= 0
    required = [schema.inform_index("train", s) for s in ("day", "departure", "destination")]
    assert (goals.final[rows][:, required] > 0).all()


def test_matching_agrees_with_a_direct_reading_of_the_database(model, real_dir):  # noqa: F811
    schema = model.schema

    def matched(domain: str, constraints: dict[str, str], key: str) -> list[str]:
        c = np.zeros((1, schema.n_inform), dtype=np.int64)
        for slot, value in constraints.items():
            s = schema.inform_index(domain, slot, book=False)
            c[0, s] = schema.value_id(s, value)
        entities = _json(real_dir, f"db/{domain}_db.json")
        return sorted(
            entities[e][key] for e in np.flatnonzero(match_entities(schema, schema.domains.index(domain), c)[0])
        )

    restaurants = _json(real_dir, "db/restaurant_db.json")
    wanted = {"area": "centre", "food": "italian", "pricerange": "cheap"}
    expected = sorted(r["name"] for r in restaurants if all(r[k] == v for k, v in wanted.items()))
    assert "pizza hut city centre" in expected and matched("restaurant", wanted, "name") == expected
    trains = _json(real_dir, "db/train_db.json")
    route = {"day": "monday", "departure": "cambridge", "destination": "london kings cross"}
    expected = sorted(
        t["trainID"]
        for t in trains
        if all(t[k] == v for k, v in route.items()) and parse_minutes(t["leaveAt"]) >= parse_minutes("15:15")
    )
    assert 0 < len(expected) < 12 and matched("train", {**route, "leaveAt": "15:15"}, "trainID") == expected
    hotels = _json(real_dir, "db/hotel_db.json")
    wanted = {"type": "guesthouse", "parking": "yes", "stars": "4", "area": "north"}
    expected = sorted(h["name"] for h in hotels if all(h[k] == v for k, v in wanted.items()))
    assert len(expected) >= 2 and matched("hotel", wanted, "name") == expected


def test_action_set_and_coverage_of_the_real_dialogues(model, real_dir):  # noqa: F811
    assert model.n_actions == 1500 and len(set(model.actions.composites)) == 1500
    assert model.actions.counts[0] >= model.actions.counts[-1] > 0
    turns = read_system_turns(real_dir)
    share, n = act_coverage(turns, model.actions.composites)
    # an independent count straight from the zip files
    actions, hits, total = set(model.actions.composites), 0, 0
    for split in ("val", "test"):
        with zipfile.ZipFile(Path(real_dir) / f"{split}.json.zip") as archive:
            dialogues = json.loads(archive.read(f"{split}.json"))
        for dialogue in dialogues.values():
            for turn in dialogue["log"][1::2]:
                triples = {f"{k}-{slot}" for k, pairs in turn.get("dialog_act", {}).items() for slot, _ in pairs}
                total += 1
                hits += ";".join(sorted(triples)) in actions
    assert len(dialogues) == 1000 and n == total > 14_000
    assert share == pytest.approx(hits / total) and share > 0.8


def test_rule_policy_meets_the_success_goal_and_behaviours_are_ordered(model):
    results = {
        name: rollout_episodes(model, make_behaviour(model, name), 1000, np.random.default_rng(7))
        for name in ("expert", "medium", "random")
    }
    assert results["expert"].successes.mean() >= 0.6  # the goal for the rule policy
    returns = {name: r.returns.mean() for name, r in results.items()}
    assert returns["expert"] > returns["medium"] + 10 > returns["random"] + 20
    assert results["expert"].lengths.mean() < results["random"].lengths.mean()


@pytest.mark.slow
def test_merlion_encoder_trains_on_a_dialogue_dataset(model, real_dir, tmp_path):  # noqa: F811
    import torch

    from merlion_core.data.collect import collect
    from merlion_core.data.io import save_dataset
    from merlion_core.pipelines.encoder import train_encoder
    from merlion_core.representation.artifacts import load_representation

    torch.set_num_threads(1)
    dataset = collect("dialogue", "medium", 0.5, 3000, seed=0, n_envs=64, env_overrides={"data_dir": real_dir})
    path = save_dataset(dataset, tmp_path / "dialogue")
    seen = []
    out = train_encoder(
        path,
        "merlion",
        tmp_path / "enc",
        overrides={"steps": 300, "log_every": 50},
        device="cpu",
        progress=lambda step, metrics: seen.append(metrics["encoder_loss"]),
    )
    rep = load_representation(out["out"]).representation
    assert rep.config.dim == 30 and rep.config.p == pytest.approx(0.3)  # the paper's dialogue defaults
    assert len(seen) == 6 and all(np.isfinite(seen))
    obs = torch.as_tensor(dataset.observations[:4])
    emb = rep.embed_chunk(obs, torch.arange(1500))
    assert emb.shape == (4, 1500, 30) and torch.isfinite(emb).all()
