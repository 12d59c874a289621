"""Source columns to solo's row fields: which format a dataset's rows are in, and the renaming.

solo knows four trainable row formats (``text``; ``prompt`` + ``completion``; ``messages``;
``prompt`` + ``chosen`` + ``rejected``, conversational when the prompts are messages) and
prompt-only rows for generating. A source's columns are mapped to those fields by the
``*_column`` parameters of :class:`solo_cli.data.spec.DataSpec`, or found by their names.
Columns no format uses are left out, and the :class:`RowSet` says which (``references`` is kept
for evaluation).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ..errors import UsageError, param
from .formats import PROMPT, TRAINABLE, Format, by_columns, conversational, strip_nulls

LINE = "__line__"  # a JSONL row's line in its file: no JSONL row may have this key, so it cannot clash

PARAMS = {
    "text": "text_column",
    "prompt": "prompt_column",
    "completion": "completion_column",
    "messages": "messages_column",
    "chosen": "chosen_column",
    "rejected": "rejected_column",
}


def how() -> str:
    """How a message says to choose the columns: by the parameters (the CLI shows them as flags)."""
    text, prompt, completion, messages, chosen, rejected = (param(name) for name in PARAMS.values())
    return f"choose the columns with {text}, {prompt} + {completion}, {messages}, or {prompt} + {chosen} + {rejected}"


@dataclass
class RowSet:
    """One split of rows in a solo format, as an Arrow dataset whose columns are the format's fields.

    ``name`` is how messages name the split (``data/train.parquet``, ``owner/name[train]``);
    ``origin`` maps each field to the source column it came from, for row and column errors.
    ``rows_digest`` changes when the source's rows do: a file's sha256, or the ``datasets``
    fingerprint of a ``save_to_disk`` or Hub split. ``checked``: the rows were checked as they
    were read (JSON rows), so :func:`solo_cli.data.checks.check_rows` need not read them again.
    """

    dataset: object  # datasets.Dataset
    fmt: str
    name: str
    origin: dict[str, str] = field(default_factory=dict)
    rows_digest: str = ""
    checked: bool = False
    ignored: tuple[str, ...] = ()  # source keys or columns no field of the format uses, left out

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
                yield strip_nulls(dict(zip(names, values, strict=True)))

    @property
    def note(self) -> str | None:
        """The one line that says which keys (JSON) or columns (tables) were left out, if any."""
        if not self.ignored:
            return None
        what = "keys" if self.checked else "columns"
        shown = ", ".join(f'"{k}"' for k in self.ignored)
        return f"{self.name}: ignored the {what} {shown}, which are no field of {self.fmt} rows"

    def labels(self) -> list[str]:
        """How messages name each row, in order (:meth:`where` for every row, read a column at a time)."""
        if LINE in self.dataset.column_names:
            return [f"{self.name}:{n}" for n in self.dataset[LINE]]
        return [f"{self.name} row {n}" for n in range(1, len(self.dataset) + 1)]


def _given_format(given: dict[str, str], columns: list[str]) -> Format:
    """The format the mapped fields ``given`` belong to; where several hold them all (``prompt`` alone), the one
    whose other fields are columns here, else prompt rows to generate from."""
    kinds = [f for f in TRAINABLE if set(given) <= set(f.fields)]
    if not kinds:
        flags = ", ".join(param(PARAMS[f]) for f in given)
        raise UsageError(f"{flags}: these name fields of different row formats; {how()}")
    if len(kinds) == 1:
        return kinds[0]
    complete = [f for f in kinds if all(name in given or name in columns for name in f.required)]
    return complete[0] if len(complete) == 1 else PROMPT


def _format_of(given: dict[str, str], columns: list[str], name: str) -> Format:
    if given:
        return _given_format(given, columns)
    found = by_columns(columns)
    if len(found) > 1:
        names = ", ".join(f.name for f in found)
        raise UsageError(f"{name}: its columns {columns} fit more than one row format ({names}); {how()}")
    if found:
        return found[0]
    if all(f in columns for f in PROMPT.required):
        return PROMPT
    raise UsageError(f"{name}: its columns {columns} hold no rows solo knows; {how()}")


def plan_columns(columns: list[str], name: str, given: dict[str, str] | None = None) -> tuple[Format, dict[str, str]]:
    """The format of rows with these source ``columns``, and which column holds each of its fields.

    ``given`` maps fields to source columns (``{"prompt": "question", "completion": "answer"}``);
    fields it leaves out are the columns of that name. Optional fields are kept where a column
    holds them; columns no field uses are left out.
    """
    given = dict(given or {})
    for key, column in given.items():
        if column not in columns:
            raise UsageError(f"{param(PARAMS[key])} {column}: no such column in {name}; its columns are {columns}")
    fmt = _format_of(given, columns, name)
    origin = {f: given.get(f, f) for f in fmt.required}
    for f, column in origin.items():
        if column not in columns:
            raise UsageError(
                f'{name}: no "{column}" column for the {f}s; name the column that holds them with {param(PARAMS[f])}'
            )
    for f in fmt.optional:
        if f in columns and f not in origin.values():
            origin[f] = f
    return fmt, origin


def _is_list(feature) -> bool:
    from datasets import LargeList, List, Sequence

    return isinstance(feature, (list, List, LargeList, Sequence))


def map_columns(dataset, name: str, given: dict[str, str] | None = None, rows_digest: str = "") -> RowSet:
    """The :class:`RowSet` of ``dataset``: its rows' format, and its columns renamed to that format's fields.

    Preference pairs are conversational when their prompt column holds lists (of messages).
    """
    fmt, origin = plan_columns(list(dataset.column_names), name, given)
    if fmt.pairs:
        fmt = conversational(fmt, [] if _is_list(dataset.features[origin["prompt"]]) else "")
    ignored = sorted(c for c in dataset.column_names if c not in origin.values())
    dataset = dataset.select_columns(list(origin.values()))
    renames = {column: f for f, column in origin.items() if column != f}
    if renames:  # through temporary names, so that swapped columns (prompt <-> completion) do not clash
        dataset = dataset.rename_columns({column: f"__solo_{f}" for column, f in renames.items()})
        dataset = dataset.rename_columns({f"__solo_{f}": f for f in renames.values()})
    return RowSet(dataset, fmt.name, name, origin, rows_digest, ignored=tuple(ignored))
