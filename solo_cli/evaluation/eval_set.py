"""What `solo eval` scores against: the rows of --data, grouped into prompts with every reference each has.

The rows are read as training reads them (:func:`solo_cli.data.sources.load_split`: the same
readers, checks and cache), and the loss is taken on them through the same cached encoder.
Torch-free: ``solo eval --predictions`` reads and scores without importing torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..data.columns import RowSet
from ..data.sources import load_split
from ..data.spec import DataSpec
from ..errors import UsageError


@dataclass
class EvalSet:
    """Rows grouped for generation: one prompt per unique input, with every reference it has."""

    prompts: list  # str, or a list of chat messages
    references: list[list[str]]
    rows: list[dict] = field(default_factory=list)
    fmt: str = "completion"
    where: list[str] = field(default_factory=list)  # each prompt's first row, "file:line", for error messages


def _prompt_key(prompt) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def eval_set(rows: list[dict], fmt: str, where: list[str] | None = None) -> EvalSet:
    """Group rows by prompt (E2E has one row per reference) into prompts with reference lists.

    ``where`` names each row (``file:line``); a prompt is named after its first row.
    """
    if fmt == "text":
        raise UsageError("text rows have no prompt to generate from; use prompt/completion, prompt/references or chat rows")
    where = where if where is not None else [f"row {n}" for n in range(1, len(rows) + 1)]
    grouped: dict[str, tuple] = {}
    first: dict[str, str] = {}
    for row, label in zip(rows, where):
        if fmt == "chat":
            messages = row["messages"]
            prompt, refs = messages[:-1], [messages[-1]["content"]] if messages[-1]["role"] == "assistant" else []
        else:
            prompt = row["prompt"]
            refs = list(row.get("references") or []) + ([row["completion"]] if "completion" in row else [])
        key = _prompt_key(prompt)
        entry = grouped.setdefault(key, (prompt, []))
        first.setdefault(key, label)
        entry[1].extend(refs)
    prompts = [p for p, _ in grouped.values()]
    references = [r for _, r in grouped.values()]
    missing = [n for n, r in enumerate(references) if not r]
    if missing:
        raise UsageError(
            f"{len(missing)} prompts have no reference to score against (first: prompt #{missing[0] + 1}); "
            'add "references" or a "completion"'
        )
    return EvalSet(prompts, references, rows, fmt, list(first.values()))


def eval_set_of(rows: RowSet) -> EvalSet:
    """:func:`eval_set` of a split's rows, each prompt named after its first row (``test.jsonl:7``)."""
    return eval_set(list(rows.rows()), rows.fmt, rows.labels())


def load_eval_split(data: str | Path | DataSpec) -> RowSet:
    """``--data``'s rows to evaluate: a file, or of a source with splits its test split, else its validation split,
    or ``data_split``."""
    spec = data if isinstance(data, DataSpec) else DataSpec(data)
    return load_split(spec, ("test", "valid"))


def load_eval_rows(data: str | Path | DataSpec) -> tuple[list[dict], str]:
    """:func:`load_eval_split` as a list of rows and their format."""
    rows = load_eval_split(data)
    return list(rows.rows()), rows.fmt
