"""Writes tests/data/multiwoz_synthetic/: a tiny, made-up data folder in MultiWOZ's layout.

The dialogue env's core tests run on it, so they need none of the real MultiWOZ files. Every
entity, value and count here is invented (Cambridge-like names only for readability); the
structure (file names, keys, value formats) follows ConvLab-2's data/multiwoz folder.

Run from the repository root: python tests/data/make_synthetic_multiwoz.py
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "multiwoz_synthetic"

RESTAURANTS = [  # name, area, food, pricerange
    ("alpha bistro", "centre", "italian", "cheap"),
    ("bravo house", "centre", "indian", "expensive"),
    ("charlie grill", "north", "italian", "expensive"),
    ("delta diner", "south", "chinese", "cheap"),
    ("echo kitchen", "north", "chinese", "moderate"),
]
HOTELS = [  # name, area, internet, parking, pricerange, stars, type
    ("foxtrot lodge", "centre", "yes", "yes", "cheap", "4", "guesthouse"),
    ("golf hotel", "north", "yes", "no", "expensive", "3", "hotel"),
    ("hotel india", "centre", "no", "yes", "moderate", "2", "hotel"),
]
ATTRACTIONS = [
    ("juliet museum", "centre", "museum"),
    ("kilo park", "north", "park"),
    ("lima college", "centre", "college"),
]
DEPARTMENTS = ["cardiology", "neurology"]
TRAINS = [  # id, day, departure, destination, leaveAt, arriveBy
    ("TR0001", "monday", "cambridge", "ely", "09:00", "09:20"),
    ("TR0002", "monday", "cambridge", "ely", "11:00", "11:20"),
    ("TR0003", "monday", "ely", "cambridge", "10:00", "10:20"),
    ("TR0004", "friday", "cambridge", "norwich", "08:30", "09:45"),
    ("TR0005", "friday", "norwich", "cambridge", "14:00", "15:15"),
    ("TR0006", "friday", "cambridge", "ely", "17:00", "17:20"),
]
TIMES = ["08:00", "09:00", "10:00", "12:00", "15:00", "18:00"]
DAYS = ["monday", "friday"]
PEOPLE = ["1", "2", "4"]


def contact(i: int) -> dict:
    return {"address": f"{i} synthetic street", "phone": f"0122300{i:04d}", "postcode": f"cb{i}aa"}


def uniform(values) -> dict:
    return {v: 1.0 / len(values) for v in values}


def databases() -> dict:
    return {
        "restaurant": [
            dict(id=str(i), name=n, area=a, food=f, pricerange=p, type="restaurant", **contact(i))
            for i, (n, a, f, p) in enumerate(RESTAURANTS)
        ],
        "hotel": [
            dict(
                id=str(i),
                name=n,
                area=a,
                internet=w,
                parking=k,
                pricerange=p,
                stars=s,
                type=t,
                takesbookings="yes",
                **contact(10 + i),
            )
            for i, (n, a, w, k, p, s, t) in enumerate(HOTELS)
        ],
        "attraction": [
            dict(id=str(i), name=n, area=a, type=t, **{"entrance fee": "free"}, **contact(20 + i))
            for i, (n, a, t) in enumerate(ATTRACTIONS)
        ],
        "hospital": [dict(id=i, department=d, **contact(30 + i)) for i, d in enumerate(DEPARTMENTS)],
        "police": [dict(id=0, name="synthetic police station", **contact(40))],
        "train": [
            dict(
                trainID=t,
                day=d,
                departure=a,
                destination=b,
                leaveAt=length,
                arriveBy=r,
                duration="20 minutes",
                price="4.40 pounds",
            )
            for t, d, a, b, length, r in TRAINS
        ],
        "taxi": {"taxi_colors": ["black", "white"], "taxi_types": ["toyota", "skoda"], "taxi_phone": ["^[0-9]{10}$"]},
    }


PLACES = ["alpha bistro", "golf hotel", "juliet museum", "kilo park"]
SLOTS = {  # domain: (info slot -> values, reqt slots, book slot -> values)
    "restaurant": (
        {
            "area": ["centre", "north", "south"],
            "food": ["italian", "indian", "chinese"],
            "pricerange": ["cheap", "expensive", "moderate"],
            "name": [r[0] for r in RESTAURANTS],
        },
        ["address", "phone", "postcode"],
        {"day": DAYS, "people": PEOPLE, "time": ["12:00", "19:00"]},
    ),
    "hotel": (
        {
            "area": ["centre", "north"],
            "internet": ["yes", "no"],
            "parking": ["yes", "no"],
            "pricerange": ["cheap", "expensive", "moderate"],
            "stars": ["2", "3", "4"],
            "type": ["guesthouse", "hotel"],
            "name": [h[0] for h in HOTELS],
        },
        ["address", "phone", "postcode"],
        {"day": DAYS, "people": PEOPLE, "stay": ["1", "2"]},
    ),
    "attraction": (
        {"area": ["centre", "north"], "type": ["museum", "park", "college"], "name": [a[0] for a in ATTRACTIONS]},
        ["address", "entrance fee", "phone"],
        {},
    ),
    "hospital": ({"department": DEPARTMENTS}, ["address", "phone"], {}),
    "police": ({}, ["address", "phone"], {}),
    "train": (
        {
            "day": DAYS,
            "departure": ["cambridge", "ely", "norwich"],
            "destination": ["cambridge", "ely", "norwich"],
            "leaveAt": TIMES,
            "arriveBy": TIMES,
        },
        ["duration", "price", "trainID"],
        {"people": PEOPLE},
    ),
    "taxi": (
        {"departure": PLACES, "destination": PLACES, "leaveAt": TIMES, "arriveBy": TIMES},
        ["car type", "phone"],
        {},
    ),
}
INFO_COMBOS: dict[str, list[tuple[list[str], int]]] = {  # (informed slots, weight)
    "restaurant": [(["area", "food"], 3), (["food", "pricerange"], 2), (["name"], 1)],
    "hotel": [(["area", "pricerange"], 2), (["parking", "stars", "type"], 1)],
    "attraction": [(["area", "type"], 2), (["name"], 1)],
    "hospital": [([], 2), (["department"], 1)],
    "police": [([], 1)],
    "train": [
        (["day", "departure", "destination", "leaveAt"], 1),
        (["arriveBy", "day", "departure", "destination"], 1),
    ],
    "taxi": [(["leaveAt"], 2), (["arriveBy"], 1)],
}
ONTOLOGY_NAMES = {"pricerange": "price range", "arriveBy": "arrive by", "leaveAt": "leave at"}


def goal_model() -> dict:
    ind_slot, ind_value, nums, combos, book_dist = {}, {}, {}, {}, {}
    for d, (info, reqt, book) in SLOTS.items():
        ind_slot[d] = {"info": {s: 0.5 for s in info}, "reqt": {s: 0.4 for s in reqt}}
        ind_value[d] = {"info": {s: uniform(v) for s, v in info.items()}, "reqt": {s: 0.4 for s in reqt}}
        if book:
            ind_slot[d]["book"] = {s: 0.5 for s in book}
            ind_value[d]["book"] = {s: uniform(v) for s, v in book.items()}
        reqt_combos = [[[r], 2] for r in reqt] + [[reqt[:2], 1]]
        combos[d] = {"info": INFO_COMBOS[d], "reqt": reqt_combos}
        nums[d] = {"info": [[len(c[0]), c[1]] for c in INFO_COMBOS[d]], "reqt": [[1, 3], [2, 1]]}
        book_dist[d] = 0.5 if book else 0.0
    orderings = [
        [["restaurant"], 0.2],
        [["hotel", "train"], 0.2],
        [["attraction", "taxi"], 0.15],
        [["restaurant", "hotel"], 0.15],
        [["hospital"], 0.1],
        [["police"], 0.1],
        [["train"], 0.1],
        [[], 0.0],
    ]
    return {
        "_format": "Synthetic",
        "ind_slot_dist": ind_slot,
        "ind_slot_value_dist": ind_value,
        "domain_ordering_dist": orderings,
        "book_dist": book_dist,
        "slots_num_dist": nums,
        "slots_combination_dist": combos,
    }


ACT = {
    "address": "Addr",
    "phone": "Phone",
    "postcode": "Post",
    "entrance fee": "Fee",
    "duration": "Time",
    "price": "Ticket",
    "trainID": "Id",
    "car type": "Car",
    "area": "Area",
    "food": "Food",
    "pricerange": "Price",
    "name": "Name",
    "day": "Day",
    "people": "People",
    "time": "Time",
    "stay": "Stay",
    "departure": "Depart",
    "destination": "Dest",
    "leaveAt": "Leave",
    "arriveBy": "Arrive",
    "type": "Type",
    "stars": "Stars",
    "internet": "Internet",
    "parking": "Parking",
    "department": "Department",
}


def composites() -> dict:
    counts: dict[str, int] = {}

    def add(key: str, count: int) -> None:
        counts[key] = counts.get(key, 0) + count

    for rank, (d, (info, reqt, book)) in enumerate(SLOTS.items()):
        cap = d.capitalize()
        name = {
            "train": "Train-Inform-Id-1",
            "hospital": "Hospital-Inform-Department-1",
            "taxi": "Taxi-Inform-Car-1",
        }.get(d, f"{cap}-Inform-Name-1")
        add(name, 60 - rank)
        for r in reqt:
            add(f"{cap}-Inform-{ACT[r]}-1;{name}" if f"-{ACT[r]}-" not in name else name, 40 - rank)
        if len(reqt) >= 2:
            add(";".join(sorted(f"{cap}-Inform-{ACT[r]}-1" for r in reqt[:2])) + f";{name}", 30 - rank)
            add(";".join(f"{cap}-Inform-{ACT[r]}-1" for r in reqt) + f";{name}", 20 - rank)
        if d in ("restaurant", "hotel", "attraction", "train", "hospital"):
            add(f"{cap}-NoOffer-none-none", 25 - rank)
        for s in info:
            add(f"{cap}-Request-{ACT[s]}-?", 15 - rank)
        for s in book:
            add(f"Booking-Request-{ACT[s]}-?" if d != "train" else f"Train-Request-{ACT[s]}-?", 18 - rank)
    add("Booking-Book-Ref-1", 50)
    add("Train-OfferBooked-Ref-1", 45)
    add("Booking-Inform-none-none", 12)
    add("general-reqmore-none-none", 70)
    add("general-bye-none-none", 80)
    add("general-welcome-none-none", 10)
    # the same act set in two orders, and with two values: they merge into one composite
    add("Restaurant-Inform-Name-1;Restaurant-Inform-Name-2", 5)
    add("Restaurant-Inform-Name-2;Restaurant-Inform-Name-1", 4)
    return counts


def ontology() -> dict:
    out = {}
    for d, (info, _, book) in SLOTS.items():
        for s, values in info.items():
            out[f"{d}-{ONTOLOGY_NAMES.get(s, s)}"] = list(values) + ["dontcare"]
        for s, values in book.items():
            out[f"{d}-book {s}"] = list(values)
    return out


def value_set(dbs: dict) -> dict:
    out = {}
    for d, entities in dbs.items():
        if isinstance(entities, list):
            keys = sorted({k for e in entities for k in e if k != "id"})
            out[d] = {k: sorted({str(e[k]) for e in entities if k in e}) for k in keys}
    return out


def main() -> None:
    (OUT / "db").mkdir(parents=True, exist_ok=True)
    dbs = databases()
    for d, entities in dbs.items():
        (OUT / "db" / f"{d}_db.json").write_text(json.dumps(entities, indent=1) + "\n")
    files = {
        "goal_model.json": goal_model(),
        "da_slot_cnt.json": composites(),
        "ontology.json": ontology(),
        "value_set.json": value_set(dbs),
    }
    for name, data in files.items():
        (OUT / name).write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
