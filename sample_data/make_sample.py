"""Build the small, deterministic sample data set under sample_data/.

The sample is cut from the E2E NLG dataset (Novikova, Dušek, Rieser 2017;
CC BY-SA 4.0) as prepared in prompt/completion JSONL form. Everything written
here is derived from that dataset and is therefore CC BY-SA 4.0 as well.

Usage (from the repository root):

    python sample_data/make_sample.py [--source DIR] [--out DIR]

Standard library only. Running it twice gives byte-identical output.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "e2e"

TRAIN_N, TRAIN_SEED = 300, 0
VALID_N, VALID_SEED = 50, 1
TEST_N, TEST_SEED = 50, 2

# Slice rows used for the chat and plain-text files (indices into the sampled
# train slice, which is in original line order).
CHAT_SINGLE = range(11)  # 11 single-exchange conversations
CHAT_MULTI = (11, 12)  # 1 conversation with two user/assistant exchanges
PLAIN_ROWS = range(13, 25)  # 12 plain-text rows
CHAT_WITH_SYSTEM = {0, 5}  # chat rows (by output position) that get a system message

SYSTEM_PROMPT = (
    "You write short, fluent restaurant descriptions. The user gives a meaning "
    "representation as comma-separated attribute[value] pairs; reply with a "
    "description that mentions every attribute."
)


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open("r", encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{lineno}: invalid JSON: {e}") from None
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def clean_completion(text: str) -> bool:
    """True if a reference is safe to use verbatim as a one-line completion."""
    return "\r" not in text and "\n" not in text and text == text.strip(" ")


def sample_indices(eligible: list[int], n: int, seed: int) -> list[int]:
    if len(eligible) < n:
        raise SystemExit(f"need {n} rows, only {len(eligible)} eligible")
    return sorted(random.Random(seed).sample(eligible, n))


def sample_pairs(rows: list[dict], n: int, seed: int) -> list[dict]:
    eligible = [i for i, r in enumerate(rows) if clean_completion(r["completion"])]
    return [{"prompt": rows[i]["prompt"], "completion": rows[i]["completion"]} for i in sample_indices(eligible, n, seed)]


def sample_test(rows: list[dict], n: int, seed: int) -> list[dict]:
    idx = sample_indices(list(range(len(rows))), n, seed)
    return [{"prompt": rows[i]["prompt"], "references": rows[i]["references"]} for i in idx]


def build_chat(train: list[dict]) -> list[dict]:
    out = []
    for i in CHAT_SINGLE:
        out.append(
            {
                "messages": [
                    {"role": "user", "content": train[i]["prompt"]},
                    {"role": "assistant", "content": train[i]["completion"]},
                ]
            }
        )
    messages = []
    for i in CHAT_MULTI:
        messages.append({"role": "user", "content": train[i]["prompt"]})
        messages.append({"role": "assistant", "content": train[i]["completion"]})
    out.append({"messages": messages})
    for pos in sorted(CHAT_WITH_SYSTEM):
        out[pos]["messages"].insert(0, {"role": "system", "content": SYSTEM_PROMPT})
    return out


def build_plain(train: list[dict]) -> list[dict]:
    return [{"text": f"MR: {train[i]['prompt']}\nDescription: {train[i]['completion']}"} for i in PLAIN_ROWS]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help="folder with E2E train.jsonl/valid.jsonl/test.jsonl (default: ../shared/data/e2e relative to the repo root)",
    )
    p.add_argument("--out", type=Path, default=HERE, help="output folder (default: sample_data/)")
    args = p.parse_args(argv)

    src: Path = args.source
    out: Path = args.out
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl"):
        if not (src / name).is_file():
            print(f"error: {src / name} not found (use --source DIR)", file=sys.stderr)
            return 2

    train = sample_pairs(read_jsonl(src / "train.jsonl"), TRAIN_N, TRAIN_SEED)
    valid = sample_pairs(read_jsonl(src / "valid.jsonl"), VALID_N, VALID_SEED)
    test = sample_test(read_jsonl(src / "test.jsonl"), TEST_N, TEST_SEED)
    chat = build_chat(train)
    plain = build_plain(train)

    outputs = {
        out / "e2e" / "train.jsonl": train,
        out / "e2e" / "valid.jsonl": valid,
        out / "e2e" / "test.jsonl": test,
        out / "chat.jsonl": chat,
        out / "plain.jsonl": plain,
    }
    for path, rows in outputs.items():
        write_jsonl(path, rows)
        print(f"wrote {len(rows):4d} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
