"""CSV and TSV files into an Arrow dataset of text columns, read by solo with Python's ``csv`` module.

Every cell is text (a number-looking prompt stays text, an empty cell is ``""``). The file is
checked as it streams in, each problem named in one line: a file that is not UTF-8 (by its
line), a header that repeats a column, a row with more cells than the header (an unquoted
separator inside a cell: pandas would have turned the extra cells into an index and shifted the
row), and a file with no rows. Rows are named ``file row N`` (N from 1, the header not counted),
as :mod:`solo_cli.data.checks` names them. The Arrow copy is cached under the file's sha256.
"""

from __future__ import annotations

import csv
import hashlib
import sys
from pathlib import Path

from ..errors import UsageError
from .quiet import quiet_datasets, solo_cause
from .rows import lines

_VERSION = "solo-csv-1"  # bump when the rows written change


def _reader(path: Path, sep: str):
    # field_size_limit: a cell may be as long as a document (the default stops at 128 KiB)
    csv.field_size_limit(sys.maxsize)
    return csv.reader((text for _, text in lines(path, keepends=True)), delimiter=sep, strict=True)


def _separator(sep: str) -> str:
    return "tab" if sep == "\t" else repr(sep)


def header(path: Path, sep: str) -> list[str]:
    """The column names of a CSV/TSV file; refuses an empty file and a repeated column."""
    try:
        names = next(_reader(path, sep), None)
    except csv.Error as exc:
        raise UsageError(f"{path}: the header is not valid CSV ({exc}); check the quoting") from None
    if not names or names == [""]:
        raise UsageError(f"{path}: the file is empty; its first line must name the columns (prompt,completion)")
    seen = set()
    for name in names:
        if name in seen:
            raise UsageError(f'{path}: the header names the column "{name}" twice; rename or remove one of them')
        seen.add(name)
    return names


def _rows(path: str, sep: str):
    """The generator ``Dataset.from_generator`` runs: one dict of text cells per row."""
    reader = _reader(Path(path), sep)
    names = next(reader)
    count = 0
    try:
        for cells in reader:
            if not cells:  # a blank line
                continue
            count += 1
            if len(cells) > len(names):
                raise UsageError(
                    f"{path} row {count}: {len(cells)} fields, the header has {len(names)}; "
                    f"quote cells that hold the separator ({_separator(sep)})"
                )
            yield {name: cells[n] if n < len(cells) else None for n, name in enumerate(names)}
    except csv.Error as exc:
        raise UsageError(f"{path}:{reader.line_num}: not valid CSV ({exc}); check the quoting") from None
    if count == 0:
        raise UsageError(f"{path}: no rows under the header; add rows")


def load_csv(path: Path, sep: str, sha256: str):
    """A CSV (``sep=","``) or TSV (``"\\t"``) file as a ``datasets.Dataset`` of text columns, named by its header."""
    from datasets import Dataset, Features, Value
    from datasets.exceptions import DatasetGenerationError

    names = header(path, sep)
    key = f"{_VERSION}\0{sha256}\0{sep}"
    try:
        with quiet_datasets():
            return Dataset.from_generator(
                _rows,
                features=Features({name: Value("string") for name in names}),
                gen_kwargs={"path": str(path), "sep": sep},
                fingerprint=hashlib.sha256(key.encode()).hexdigest()[:40],
            )
    except DatasetGenerationError as exc:  # the reader's own message
        cause = solo_cause(exc)
        if cause is None:
            raise
        raise cause from None
