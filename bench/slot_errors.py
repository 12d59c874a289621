"""Slot errors of E2E outputs: a value of the MR missing (or misspelled), or a value of another MR present.

A small, rule-based checker in the spirit of the E2E slot error rate (Dušek et al. 2019, 2020):

- missing: a slot of the MR that the output does not say, as its value or one of its usual
  wordings ("riverside" or "river"; "5 out of 5" or "five stars"; familyFriendly[no] needs a
  negation such as "not family friendly"). A misspelled name is a missing one;
- added: a value of another MR said although this MR does not have it: a place name other than the
  MR's name and near, a food, area or eat type (not the generic "restaurant"), a price in pounds,
  an "N out of 5" rating or a family-friendly claim for a slot the MR leaves out, or another value
  of a slot the MR has.

Usage: python bench/slot_errors.py PREDICTIONS.jsonl [--mrs sample_data/e2e/test.jsonl]
(predictions as `solo eval --output` writes them: one {"prediction": ...} per test MR, in order).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

PLACES = ("name", "near")
# Wordings of a value other than itself, |-separated (each matched as whole words, case-insensitively).
SAID = {
    ("area", "riverside"): "river",
    ("area", "city centre"): "city center|centre of the city|center of the city|city",
    ("priceRange", "cheap"): "low price|low-price|inexpensive|affordable|less than £20|low cost",
    ("priceRange", "moderate"): "moderately|average price|mid-range|mid price|reasonabl",
    ("priceRange", "high"): "high price|high-price|expensive|high end|high-end|pricey|more than £30",
    ("priceRange", "less than £20"): "under £20|below £20|lower than £20|cheap|less than 20|low price|inexpensive",
    ("priceRange", "£20-25"): "£20-£25|20-25|£20 - 25|20 to 25|twenty|moderate|mid range|mid-range|average price",
    ("priceRange", "more than £30"): (
        "over £30|above £30|£30|more than 30|expensive|high price|upmarket|up market|high end|high-end"
    ),
    ("customer rating", "5 out of 5"): "five star|5 star|five out of five|5-star|five-star",
    ("customer rating", "3 out of 5"): "three star|3 star|three out of five|3-star|three-star",
    ("customer rating", "1 out of 5"): "one star|1 star|one out of five|1-star|one-star",
    ("customer rating", "high"): "highly|excellent|great",
    ("customer rating", "low"): "poor|poorly|bad",
    ("customer rating", "average"): "mediocre|ok|decent",
    ("familyFriendly", "yes"): (
        "family friendly|family-friendly|child friendly|child-friendly|kid friendly|kid-friendly|children|kids|families|family"
    ),
    ("familyFriendly", "no"): (
        "not family|not child|not kid|no children|adults only|adult only|non family|non-family|isn't family|not a family|"
        "not suitable for children|not children|no kids|not kids|not for children|not for families|"
        "not suitable for families|adults-only|not cater|no family"
    ),
    ("food", "Fast food"): "fast-food|fast food",
}
NEGATED = SAID[("familyFriendly", "no")].split("|")
FAMILY = ("family friendly", "family-friendly", "child friendly", "child-friendly", "kid friendly", "kid-friendly")
# Values that name their slot unambiguously when said where the MR lacks that slot (an "added" slot).
STRICT = {
    "priceRange": ("£",),
    "customer rating": ("out of 5", "star"),
}


def parse_mr(mr: str) -> dict[str, str]:
    return {m.group(1).strip(): m.group(2) for m in re.finditer(r"([A-Za-z][\w ]*?)\[([^\]]*)\]", mr)}


def says(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, flags=re.IGNORECASE) is not None


def realised(text: str, slot: str, value: str) -> bool:
    """Whether ``text`` says ``slot`` = ``value``."""
    if slot == "familyFriendly":
        negated = any(says(text, p) for p in NEGATED)
        return negated if value == "no" else not negated and any(says(text, p) for p in SAID[(slot, "yes")].split("|"))
    return any(says(text, phrase) for phrase in (value, *SAID.get((slot, value), "").split("|")) if phrase)


def pool_of(mrs: list[str]) -> dict[str, set[str]]:
    """Every value of every slot in ``mrs`` (names and nears together: both are places)."""
    pool: dict[str, set[str]] = {}
    for mr in mrs:
        for slot, value in parse_mr(mr).items():
            pool.setdefault("place" if slot in PLACES else slot, set()).add(value)
    return pool


def _inside(value: str, mr: dict[str, str]) -> bool:
    return any(value.lower() in v.lower() or v.lower() in value.lower() for v in mr.values())


def slot_errors(text: str, mr_text: str, pool: dict[str, set[str]]) -> list[tuple[str, str, str]]:
    """``(kind, slot, value)`` for every slot error of ``text`` as a realisation of ``mr_text``."""
    mr = parse_mr(mr_text)
    errors = [("missing", slot, value) for slot, value in mr.items() if not realised(text, slot, value)]
    for slot, values in pool.items():
        for value in sorted(values):
            if _inside(value, mr) or (slot == "eatType" and value == "restaurant"):
                continue
            if slot in ("place", "food", "area", "eatType") and says(text, value):
                errors.append(("added", slot, value))
            elif slot in STRICT and slot not in mr and any(m in value for m in STRICT[slot]) and says(text, value):
                errors.append(("added", slot, value))
    if "familyFriendly" not in mr and any(says(text, p) for p in FAMILY):
        errors.append(("added", "familyFriendly", "said"))
    return errors


def count(predictions: list[str], mrs: list[str]) -> dict:
    """Slot errors of ``predictions`` (one per MR of ``mrs``, in order): totals, by kind, per output, and examples."""
    if len(predictions) != len(mrs):
        raise ValueError(f"{len(predictions)} predictions for {len(mrs)} MRs")
    pool = pool_of(mrs)
    found = [slot_errors(text, mr, pool) for text, mr in zip(predictions, mrs)]
    slots = sum(len(parse_mr(mr)) for mr in mrs)
    missing = sum(kind == "missing" for errors in found for kind, _, _ in errors)
    total = sum(len(errors) for errors in found)
    return {
        "outputs": len(predictions),
        "slots": slots,
        "slot_errors": total,
        "missing": missing,
        "added": total - missing,
        "slot_error_rate": round(total / max(1, slots), 4),
        "outputs_with_errors": sum(bool(errors) for errors in found),
        "per_output": [[list(e) for e in errors] for errors in found],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--mrs", type=Path, default=Path(__file__).resolve().parent.parent / "sample_data" / "e2e" / "test.jsonl")
    args = parser.parse_args()
    rows = [json.loads(line) for line in args.predictions.read_text(encoding="utf-8").splitlines() if line.strip()]
    mrs = [json.loads(line)["prompt"] for line in args.mrs.read_text(encoding="utf-8").splitlines() if line.strip()]
    result = count([row["prediction"] for row in rows], mrs[: len(rows)])
    print(json.dumps({k: v for k, v in result.items() if k != "per_output"}, indent=2))


if __name__ == "__main__":
    main()
