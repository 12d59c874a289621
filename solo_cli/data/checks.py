"""Checking the rows of an Arrow source (Parquet, CSV, ``save_to_disk``, the Hub) before training.

The checks and words are those of JSON rows (:mod:`solo_cli.data.formats`); a table's bad row is
named by its split, its row number (from 1) and its source column:
``train.parquet row 17, column "completion": expected a string, got null; fill it in or drop the row``.
String columns are searched a batch at a time with Arrow compute, and the first bad value found
is refused by the same check a JSON row's value meets; conversations and references are checked
row by row.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import UsageError
from .columns import RowSet
from .formats import FORMATS, STRING, TURN, check_field, strip_nulls, table_column

_BATCH = 50_000


def _first(mask: pa.ChunkedArray | pa.Array) -> int | None:
    index = pc.index(mask, True).as_py()
    return None if index < 0 else index


def _bad_string(column: pa.ChunkedArray, trained: bool) -> int | None:
    """The first row of ``column`` that is not a string, or (``trained``) is blank; ``None`` if all are fine."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        valid = _first(pc.is_valid(column))  # the first value, shown as a JSON row's would be
        return 0 if valid is None else valid
    bad = pc.is_null(column)
    if trained:
        bad = pc.or_kleene(bad, pc.equal(pc.utf8_trim_whitespace(column), ""))  # null or blank
    return _first(bad)


def _suspects(batch: pa.Table, field: str, kind: str, trained: bool):
    """``(row in batch, value)`` of the values to check: a string column's first bad one, else every one.

    A preference reply (``TURN``) is a string column or a column of messages, checked as the one it is.
    """
    column = batch.column(field)
    if kind == STRING or (kind == TURN and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type))):
        at = _bad_string(column, trained)
        return [] if at is None else [(at, column[at].as_py())]
    return enumerate(column.to_pylist())


def check_rows(rows: RowSet) -> None:
    """Raise a :class:`UsageError` naming the first bad row and column of ``rows``, if any.

    Rows read from JSON were checked as they were read, with their ``file:line``; they pass here.
    """
    if rows.checked:
        return
    fmt, start = FORMATS[rows.fmt], 0
    for batch in rows.dataset.with_format("arrow").iter(batch_size=_BATCH):
        for field in (f for f in fmt.fields if f in batch.column_names):
            for n, value in _suspects(batch, field, fmt.kind(field), field in fmt.trained):
                if isinstance(value, list):  # a table's messages are structs: a field some lack is null in the others
                    value = [strip_nulls(m) if isinstance(m, dict) else m for m in value]
                name = table_column(f"{rows.name} row {start + n + 1}", rows.origin)
                check_field(fmt, field, value, name(field))
        start += batch.num_rows
    if start == 0:
        raise UsageError(f"{rows.name}: no rows; add rows, or read another split or source")
