"""The rows `solo generate --input` generates from, read as training and `solo eval` read data.

One split of the source (:func:`solo_cli.data.sources.load_split`: the same readers, checks,
cache and ``file:line`` / ``file row N`` names), each row with a prompt or a conversation.
"""

from __future__ import annotations

from ..data.sources import load_split
from ..data.spec import DataSpec
from ..errors import UsageError


def read_inputs(spec: DataSpec) -> tuple[list[dict], list[str], str | None]:
    """``spec``'s rows (its test split, else valid, else train), how messages name each (``rows.jsonl:7``), and the
    line that says which of its keys or columns were ignored (None if none were)."""
    rows = load_split(spec, ("test", "valid", "train"), name="input")
    if rows.fmt == "text":
        raise UsageError(f'{spec.data}: rows need a "prompt" (or "messages") to generate from, not "text"')
    return list(rows.rows()), rows.labels(), rows.note


def prompt_of(row: dict):
    """What to generate from: the prompt, or the conversation before its last assistant turn."""
    if "messages" in row:
        messages = row["messages"]
        return messages[:-1] if messages[-1]["role"] == "assistant" else messages
    return row["prompt"]
