"""JSON rows (a JSONL file, or a file holding one JSON array) into an Arrow dataset, checked as they are read.

Every row passes the checks of :mod:`solo_cli.data.formats` and is named where it is: a JSONL
row by ``file:line`` (its line is kept in a ``__line__`` column), an array's by ``file row N``.
With ``*_column`` parameters the keys of the first row are the columns, mapped as a table's are
(:func:`solo_cli.data.columns.plan_columns`). Keys no field uses are left out, and the
:class:`RowSet` lists them (``ignored``), so the reader can say once which they were.

A JSONL file streams into the ``datasets`` cache under a key made of the file's sha256, so a
second run (or a resume) reads the Arrow copy back without parsing the JSON again, and an edited
file is read again whatever its size and modification time. A JSON array is parsed whole (as
any JSON reader must) and held in memory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import UsageError
from .columns import LINE, RowSet, plan_columns
from .formats import FORMATS, check_fields, conversational, value_type
from .quiet import quiet_datasets, solo_cause
from .rows import check_one_format, json_array, json_objects

_VERSION = "solo-json-3"  # bump when the rows written change
IGNORED = "__ignored__"  # each row's keys that no field uses: a column read once, then dropped


def _mapped(objects, fmt_name: str, origin: dict[str, str]):
    """``(number, row, ignored keys)`` of rows whose fields come from the source keys ``origin`` names, each checked."""
    fmt, used = FORMATS[fmt_name], set(origin.values())
    for where, number, value in objects:
        if not isinstance(value, dict):
            raise UsageError(f"{where}: expected a JSON object, got {value_type(value)}")
        row = {field: value.get(key) for field, key in origin.items()}
        row = check_fields(row, fmt, lambda field, where=where: f'{where}, key "{origin[field]}"')
        yield number, row, sorted(str(k) for k in value if k not in used)


def _checked(objects, fmt_name: str, origin: dict[str, str] | None, unit: str):
    if origin is None:
        return ((number, row, ignored) for number, row, _, ignored in check_one_format(objects, unit))
    return _mapped(objects, fmt_name, origin)


def _jsonl_rows(path: str, fmt: str, origin: str):
    """The generator ``Dataset.from_generator`` runs (its arguments are strings: datasets splits lists into shards)."""
    fields = FORMATS[fmt].fields
    for lineno, row, ignored in _checked(json_objects(path), fmt, json.loads(origin), "line"):
        yield {**{name: row.get(name) for name in fields}, LINE: lineno, IGNORED: ignored}


def _plan(first, where: str, name: str, given: dict[str, str]) -> tuple[str, dict[str, str] | None]:
    """The format of the rows and, with ``given`` columns, which key holds each field (from the first row's keys)."""
    if not given:
        _, _, fmt, _ = next(check_one_format([(where, 0, first)]))
        return fmt, None
    if not isinstance(first, dict):
        raise UsageError(f"{where}: expected a JSON object, got {value_type(first)}")
    fmt, origin = plan_columns(list(first), name, given)
    if fmt.pairs:  # conversational when the first row's prompt is a list of messages
        fmt = conversational(fmt, first.get(origin["prompt"]))
    return fmt.name, origin


def _without_ignored(dataset) -> tuple[object, tuple[str, ...]]:
    """``dataset`` less its column of ignored keys, and every key that column names (read with Arrow, once)."""
    import pyarrow.compute as pc

    column = dataset.with_format("arrow")[IGNORED]
    keys = pc.unique(pc.list_flatten(column)).to_pylist()
    return dataset.remove_columns(IGNORED), tuple(sorted(keys))


def load_jsonl(path: Path, sha256: str, given: dict[str, str] | None = None) -> RowSet:
    """A checked JSONL file as a :class:`RowSet`; a bad line raises its ``file:line`` error.

    ``sha256`` is the file's (computed once by the caller); it keys the Arrow copy in the cache.
    """
    from datasets import Dataset, List, Value
    from datasets.exceptions import DatasetGenerationError

    first = next(json_objects(path), None)
    if first is None:
        raise UsageError(f'{path}: the file has no rows; add JSONL rows such as {{"prompt": ..., "completion": ...}}')
    fmt, origin = _plan(first[2], first[0], str(path), given or {})
    key = json.dumps([_VERSION, sha256, fmt, origin])
    try:  # gen_kwargs hold no lists: datasets would read a list as shards to split between workers
        with quiet_datasets():
            dataset = Dataset.from_generator(
                _jsonl_rows,
                features=FORMATS[fmt].features((LINE, "int64"), (IGNORED, List(Value("string")))),
                gen_kwargs={"path": str(path), "fmt": fmt, "origin": json.dumps(origin)},
                fingerprint=hashlib.sha256(key.encode()).hexdigest()[:40],
            )
    except DatasetGenerationError as exc:  # a bad row further down: the check's own message
        cause = solo_cause(exc)
        if cause is None:
            raise
        raise cause from None
    dataset, ignored = _without_ignored(dataset)
    origin = origin or {f: f for f in FORMATS[fmt].fields}
    return RowSet(dataset, fmt, str(path), origin, sha256, checked=True, ignored=ignored)


def load_json_array(path: Path, sha256: str, given: dict[str, str] | None = None) -> RowSet:
    """A checked file holding one JSON array of rows as a :class:`RowSet`; a bad row raises naming ``file row N``."""
    from datasets import Dataset

    objects = json_array(path)
    if not objects:
        raise UsageError(f'{path}: the JSON array holds no rows; add rows such as {{"prompt": ..., "completion": ...}}')
    fmt, origin = _plan(objects[0][2], objects[0][0], str(path), given or {})
    fields = FORMATS[fmt].fields
    checked = list(_checked(objects, fmt, origin, "row"))
    rows = [{name: row.get(name) for name in fields} for _, row, _ in checked]
    dataset = Dataset.from_list(rows, features=FORMATS[fmt].features())
    ignored = tuple(sorted({key for _, _, keys in checked for key in keys}))
    return RowSet(dataset, fmt, str(path), origin or {f: f for f in fields}, sha256, checked=True, ignored=ignored)
