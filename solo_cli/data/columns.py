"""Source columns to solo's row fields: which format a dataset's rows are in, and the renaming.

solo knows three trainable row formats (``text``; ``prompt`` + ``completion``; ``messages``) and
prompt-only rows for generating. A source's columns are mapped to those fields by the
``*_column`` parameters of :class:`solo_cli.data.spec.DataSpec`, or found by their names.
Columns no format uses are dropped (``references`` is kept for evaluation).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import UsageError, param
from .jsonl import LINE

# Trainable formats, found by their columns; "prompt" (rows to generate from) only when none is.
FORMAT_FIELDS = {"chat": ("messages",), "completion": ("prompt", "completion"), "text": ("text",)}
PARAMS = {"text": "text_column", "prompt": "prompt_column", "completion": "completion_column", "messages": "messages_column"}
_HOW = "choose the columns with text_column, prompt_column + completion_column, or messages_column"


@dataclass
class RowSet:
    """One split of rows in a solo format, as an Arrow dataset whose columns are the format's fields.

    ``name`` is how messages name the split (``data/train.parquet``, ``owner/name[train]``);
    ``origin`` maps each field to the source column it came from, for row and column errors.
    """

    dataset: object  # datasets.Dataset
    fmt: str
    name: str
    origin: dict[str, str] = field(default_factory=dict)
    fingerprint: str = ""  # changes when the rows do: a file's sha256, or the datasets fingerprint

    def __len__(self) -> int:
        return len(self.dataset)

    def where(self, index: int) -> str:
        """How a message names row ``index`` (from 0): ``train.jsonl:7`` or ``train.parquet row 7``."""
        if LINE in self.dataset.column_names:
            return f"{self.name}:{self.dataset[index][LINE]}"
        return f"{self.name} row {index + 1}"

    def rows(self, batch_size: int = 1000) -> Iterator[dict]:
        """Every row as a dict of its fields (absent optional fields left out), a batch at a time."""
        for batch in self.dataset.iter(batch_size=batch_size):
            names = [name for name in batch if name != LINE]
            for values in zip(*(batch[name] for name in names), strict=True):
                row = {name: value for name, value in zip(names, values, strict=True) if value is not None}
                if "messages" in row:  # a table's messages are structs: a field some lack is null in the others
                    row["messages"] = [{k: v for k, v in m.items() if v is not None} for m in row["messages"]]
                yield row

    def labels(self) -> list[str]:
        """How messages name each row, in order (:meth:`where` for every row, read a column at a time)."""
        if LINE in self.dataset.column_names:
            return [f"{self.name}:{n}" for n in self.dataset[LINE]]
        return [f"{self.name} row {n}" for n in range(1, len(self.dataset) + 1)]


def _format_of(given: dict[str, str], columns: list[str], name: str) -> str:
    if given:
        kinds = {"chat" if f == "messages" else "text" if f == "text" else "completion" for f in given}
        if len(kinds) > 1:
            flags = ", ".join(param(PARAMS[f]) for f in given)
            raise UsageError(f"{flags}: these name fields of different row formats; {_HOW}")
        kind = kinds.pop()
        if kind == "completion" and "completion" not in given and "completion" not in columns:
            return "prompt"  # rows to generate from
        return kind
    found = [fmt for fmt, fields in FORMAT_FIELDS.items() if all(f in columns for f in fields)]
    if len(found) > 1:
        raise UsageError(f"{name}: its columns {columns} fit more than one row format ({', '.join(found)}); {_HOW}")
    if found:
        return found[0]
    if "prompt" in columns:
        return "prompt"
    raise UsageError(f"{name}: its columns {columns} hold no rows solo knows; {_HOW}")


def map_columns(dataset, name: str, given: dict[str, str] | None = None, fingerprint: str = "") -> RowSet:
    """The :class:`RowSet` of ``dataset``: its rows' format, and its columns renamed to that format's fields.

    ``given`` maps fields to source columns (``{"prompt": "question", "completion": "answer"}``);
    fields it leaves out are the columns of that name.
    """
    given = dict(given or {})
    columns = list(dataset.column_names)
    for key, column in given.items():
        if column not in columns:
            raise UsageError(f"{param(PARAMS[key])} {column}: no such column in {name}; its columns are {columns}")
    fmt = _format_of(given, columns, name)
    fields = {"chat": ["messages"], "completion": ["prompt", "completion"], "text": ["text"], "prompt": ["prompt"]}[fmt]
    origin = {f: given.get(f, f) for f in fields}
    for f, column in origin.items():
        if column not in columns:
            raise UsageError(
                f'{name}: no "{column}" column for the {f}s; name the column that holds them with {param(PARAMS[f])}'
            )
    if fmt in ("completion", "prompt") and "references" in columns and "references" not in origin.values():
        origin["references"] = "references"
    dataset = dataset.select_columns(list(origin.values()))
    renames = {column: f for f, column in origin.items() if column != f}
    if renames:  # through temporary names, so that swapped columns (prompt <-> completion) do not clash
        dataset = dataset.rename_columns({column: f"__solo_{f}" for column, f in renames.items()})
        dataset = dataset.rename_columns({f"__solo_{f}": f for f in renames.values()})
    return RowSet(dataset, fmt, name, origin, fingerprint)
