"""Build sample_data/e2e-pairs/: preference pairs made from the E2E rows in sample_data/e2e/.

Each pair is {"prompt": MR, "chosen": a human reference for the MR, "rejected": that reference
with one slot error put in}, the errors that a data-to-text model makes (Dušek et al. 2020):

- swap: one slot value of the MR, as the reference writes it, replaced with another MR's value
  for the same slot ("French" -> "Italian", "The Eagle" -> "Zizzi");
- drop: the clause that realises one slot of the MR removed (the reference's other clauses kept),
  so a slot of the MR goes unmentioned;
- add: a sentence stating a slot the MR does not have, with another MR's value, appended.

train.jsonl: two pairs per row of e2e/train.jsonl, two different kinds of error: a dropped slot
wherever a clause can be dropped (the error a model trained on references makes most, and the one
that its likelihood favours, the rejected reply being the shorter), and a swap or an add;
valid.jsonl: one pair per row of e2e/valid.jsonl; test.jsonl: up to one pair of each kind per test
MR, its chosen reply one of the MR's references. Otherwise the kinds rotate by row, and a seeded
random choice picks the slot and the value, so the files are the same on every run.

Usage (from the repository root):

    python sample_data/make_pairs.py [--source sample_data/e2e] [--out sample_data/e2e-pairs]

Standard library only. Derived from the E2E NLG dataset (CC BY-SA 4.0), as are the files it writes.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 30
KINDS = ("swap", "drop", "add")
SLOTS = ("name", "eatType", "food", "priceRange", "customer rating", "area", "familyFriendly", "near")
# How a reference may say a value that it does not copy word for word (the MR's value is looked for first).
SAID = {
    ("area", "riverside"): ("riverside", "river"),
    ("area", "city centre"): ("city centre", "city center", "centre of the city", "center of the city", "city"),
    ("familyFriendly", "yes"): ("family friendly", "family-friendly", "child friendly", "kid friendly", "children", "kids"),
    ("familyFriendly", "no"): ("not family", "not child", "not kid", "no children", "adults only", "non family"),
}
# The sentence an "add" error appends: a slot the MR lacks, with another MR's value.
ADDED = {
    "eatType": "It is a {v}.",
    "food": "It serves {v} food.",
    "priceRange": "Its price range is {v}.",
    "customer rating": "It is rated {v}.",
    "area": "It is in the {v} area.",
    "near": "It is near {v}.",
}
ADDED_FAMILY = {"yes": "It is family friendly.", "no": "It is not family friendly."}
CLAUSE = re.compile(r"(,\s+|;\s+|\.\s+|\s+and\s+|\s+with\s+|\s+which\s+)")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8", newline="\n")


def parse_mr(mr: str) -> dict[str, str]:
    """``name[The Eagle], food[French]`` -> ``{"name": "The Eagle", "food": "French"}``."""
    return {m.group(1).strip(): m.group(2) for m in re.finditer(r"([A-Za-z][\w ]*?)\[([^\]]*)\]", mr)}


def find(text: str, phrase: str) -> re.Match | None:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, flags=re.IGNORECASE)


def said(text: str, slot: str, value: str) -> re.Match | None:
    """Where ``text`` says ``slot`` = ``value``: the value itself, else one of its usual wordings."""
    for phrase in (value, *SAID.get((slot, value), ())):
        match = find(text, phrase)
        if match:
            return match
    return None


def values_by_slot(rows: list[dict]) -> dict[str, list[str]]:
    pool: dict[str, set[str]] = {slot: set() for slot in SLOTS}
    for row in rows:
        for slot, value in parse_mr(row["prompt"]).items():
            pool.setdefault(slot, set()).add(value)
    return {slot: sorted(values) for slot, values in pool.items()}


def swap(reference: str, mr: dict[str, str], pool: dict, rng: random.Random) -> str | None:
    """The reference with one verbatim slot value replaced by another MR's value for that slot."""
    slots = [s for s in mr if s != "familyFriendly" and find(reference, mr[s])]
    rng.shuffle(slots)
    for slot in slots:
        others = [v for v in pool[slot] if v != mr[slot] and v not in mr.values() and not find(reference, v)]
        if others:
            match = find(reference, mr[slot])
            return reference[: match.start()] + rng.choice(others) + reference[match.end() :]
    return None


def _clauses(reference: str) -> list[str]:
    """The reference cut at clause boundaries, keeping each boundary with the clause after it."""
    parts = CLAUSE.split(reference)
    return [parts[0]] + [parts[i] + parts[i + 1] for i in range(1, len(parts) - 1, 2)]


def drop(reference: str, mr: dict[str, str], pool: dict, rng: random.Random) -> str | None:
    """The reference without the one clause that says one slot of the MR (other than the name)."""
    clauses = _clauses(reference)
    slots = [s for s in mr if s != "name"]
    rng.shuffle(slots)
    for slot in slots:
        holding = [i for i, c in enumerate(clauses) if said(c, slot, mr[slot])]
        if len(holding) != 1 or holding[0] == 0:  # said once, in a clause after the first (which names the place)
            continue
        clause = clauses[holding[0]]
        if any(said(clause, s, mr[s]) for s in mr if s != slot):  # the clause says only this slot
            continue
        kept = "".join(c for i, c in enumerate(clauses) if i != holding[0]).strip()
        if not said(kept, slot, mr[slot]) and len(kept.split()) >= 3:
            return kept if kept.endswith((".", "!", "?")) else kept + "."
    return None


def add(reference: str, mr: dict[str, str], pool: dict, rng: random.Random) -> str | None:
    """The reference with a sentence appended that states a slot the MR does not have."""
    missing = [s for s in SLOTS if s not in mr and s != "name"]
    rng.shuffle(missing)
    for slot in missing:
        if slot == "familyFriendly":
            sentence = ADDED_FAMILY[rng.choice(("yes", "no"))]
        else:
            options = [v for v in pool[slot] if not find(reference, v)]
            if not options:
                continue
            sentence = ADDED[slot].format(v=rng.choice(options))
        return f"{reference.rstrip()} {sentence}" if reference.rstrip().endswith((".", "!", "?")) else f"{reference}. {sentence}"
    return None


MAKERS = {"swap": swap, "drop": drop, "add": add}


def pair(mr_text: str, reference: str, kinds: tuple[str, ...], pool: dict, rng: random.Random) -> tuple[str, dict] | None:
    """The first of ``kinds`` that can corrupt ``reference``, and its pair."""
    mr = parse_mr(mr_text)
    for kind in kinds:
        rejected = MAKERS[kind](reference, mr, pool, rng)
        if rejected and rejected != reference:
            return kind, {"prompt": mr_text, "chosen": reference, "rejected": rejected}
    return None


def _rotated(start: int) -> tuple[str, ...]:
    return KINDS[start % 3 :] + KINDS[: start % 3]


def build(source: Path) -> dict[str, list[dict]]:
    splits = {name: read_jsonl(source / f"{name}.jsonl") for name in ("train", "valid", "test")}
    pool = values_by_slot([row for rows in splits.values() for row in rows])
    rng = random.Random(SEED)
    out: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    for n, row in enumerate(splits["train"]):  # two pairs a row: a dropped slot where one can be, and a swap or an add
        first = pair(row["prompt"], row["completion"], ("drop", *_rotated(n)), pool, rng)
        if first:
            out["train"].append(first[1])
            rest = tuple(k for k in _rotated(n + 1) if k != first[0])
            second = pair(row["prompt"], row["completion"], rest, pool, rng)
            out["train"] += [second[1]] if second else []
    for n, row in enumerate(splits["valid"]):
        made = pair(row["prompt"], row["completion"], _rotated(n), pool, rng)
        out["valid"] += [made[1]] if made else []
    for row in splits["test"]:  # one pair of each kind that applies, from one of the MR's references
        reference = row["references"][rng.randrange(len(row["references"]))]
        for kind in KINDS:
            made = pair(row["prompt"], reference, (kind,), pool, rng)
            out["test"] += [made[1]] if made else []
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=HERE / "e2e", help="folder with train/valid/test.jsonl")
    parser.add_argument("--out", type=Path, default=HERE / "e2e-pairs", help="where to write the pairs")
    args = parser.parse_args()
    for name, rows in build(args.source).items():
        write_jsonl(args.out / f"{name}.jsonl", rows)
        print(f"{args.out / f'{name}.jsonl'}: {len(rows)} pairs")


if __name__ == "__main__":
    main()
