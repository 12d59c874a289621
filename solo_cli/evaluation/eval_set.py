"""What `solo eval` scores against: the rows of --data, grouped into prompts with every reference each has.

The rows are read as training reads them (:func:`solo_cli.data.sources.load_split`: the same
readers, checks and cache), and the loss is taken on them through the same cached encoder.
Torch-free: ``solo eval --predictions`` reads and scores without importing torch.
"""

from __future__ import annotations

import dataclasses
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


def _prompt_of(row: dict, fmt: str):
    return row["messages"][:-1] if fmt == "chat" else row.get("prompt")


def first_prompts(rows: RowSet, limit: int | None) -> RowSet:
    """The rows of the first ``limit`` prompts (of text rows, the first ``limit`` rows): what every part of eval scores.

    A prompt's rows are all kept (E2E has one row per reference); ``rows`` itself when nothing is left out.
    """
    if not limit or len(rows) <= limit:
        return rows
    if rows.fmt == "text":
        keep = list(range(limit))
    else:
        seen: set = set()
        keep = []
        for n, row in enumerate(rows.rows()):
            prompt = _prompt_of(row, rows.fmt)
            key = (n,) if prompt is None else _prompt_key(prompt)  # a row without a prompt counts alone
            if key in seen or len(seen) < limit:
                seen.add(key)
                keep.append(n)
    if len(keep) == len(rows):
        return rows
    digest = f"{rows.rows_digest} first {limit} prompts" if rows.rows_digest else ""  # encoded apart in the cache
    return dataclasses.replace(rows, dataset=rows.dataset.select(keep), rows_digest=digest)


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
        prompt = _prompt_of(row, fmt)
        if fmt == "chat":
            last = row["messages"][-1]
            refs = [last["content"]] if last["role"] == "assistant" else []
        else:
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
