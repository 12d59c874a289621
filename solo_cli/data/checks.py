"""Checking the rows of an Arrow source (Parquet, CSV, JSON, ``save_to_disk``, the Hub) before training.

The checks of JSONL rows (:mod:`solo_cli.data.rows`), phrased for tables: a bad row is named by
its split, its row number (from 1) and its source column, in one line that says how to fix it:
``train.parquet row 17, column "completion": expected a string, got null; fill it in or drop the row``.
String columns are checked a batch at a time with Arrow compute; conversations row by row.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import UsageError
from .columns import RowSet
from .rows import check_messages

_BATCH = 50_000
_TRAINED = {"text": "text", "completion": "completion", "prompt": "prompt"}  # the field that must not be blank
_STRINGS = {"text": ("text",), "completion": ("prompt", "completion"), "prompt": ("prompt",), "chat": ()}


def _where(rows: RowSet, index: int, field: str) -> str:
    return f'{rows.name} row {index + 1}, column "{rows.origin.get(field, field)}"'


def _first(mask: pa.ChunkedArray | pa.Array) -> int | None:
    index = pc.index(mask, True).as_py()
    return None if index < 0 else index


def _check_strings(rows: RowSet, batch: pa.Table, start: int, field: str) -> None:
    column = batch.column(field)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or pa.types.is_null(column.type)):
        at = _first(pc.is_valid(column))
        value = f" ({column[at].as_py()!r})" if at is not None else ""
        raise UsageError(
            f"{_where(rows, start + (at or 0), field)}: expected a string, got {column.type}{value}; "
            "store text in that column, or map another one to the field"
        )
    at = _first(pc.is_null(column))
    if at is not None:
        raise UsageError(f"{_where(rows, start + at, field)}: expected a string, got null; fill it in or drop the row")
    if field == _TRAINED[rows.fmt]:
        at = _first(pc.equal(pc.utf8_trim_whitespace(column), ""))
        if at is not None:
            raise UsageError(f"{_where(rows, start + at, field)}: the {field} is empty; fill it in or drop the row")


def _check_references(rows: RowSet, batch: pa.Table, start: int) -> None:
    for n, refs in enumerate(batch.column("references").to_pylist()):
        if refs is not None and (not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs)):
            raise UsageError(f"{_where(rows, start + n, 'references')}: expected a non-empty list of strings, or null")


def _check_conversations(rows: RowSet, batch: pa.Table, start: int) -> None:
    for n, messages in enumerate(batch.column("messages").to_pylist()):
        where = _where(rows, start + n, "messages")
        if not isinstance(messages, list) or not messages:
            got = "null" if messages is None else "an empty list" if messages == [] else type(messages).__name__
            raise UsageError(f'{where}: expected a non-empty list of {{"role", "content"}} messages, got {got}')
        # A table's messages are structs: a field some messages lack is null in the others.
        messages = [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in messages]
        check_messages(messages, where)


def check_rows(rows: RowSet) -> None:
    """Raise a :class:`UsageError` naming the first bad row and column of ``rows``, if any.

    Rows read from JSONL were checked as they were read, with their ``file:line``; they pass here.
    """
    from .jsonl import LINE

    if LINE in rows.dataset.column_names:
        return
    start = 0
    for batch in rows.dataset.with_format("arrow").iter(batch_size=_BATCH):
        for field in _STRINGS[rows.fmt]:
            _check_strings(rows, batch, start, field)
        if rows.fmt == "chat":
            _check_conversations(rows, batch, start)
        if rows.fmt == "prompt" and "references" in batch.column_names:
            _check_references(rows, batch, start)
        start += batch.num_rows
    if start == 0:
        raise UsageError(f"{rows.name}: no rows; add rows, or pick another split")
