"""JSON rows: JSONL files line by line and JSON arrays, checked as they are read, a bad one named by its place.

One rule for every JSON source: UTF-8, no lone surrogate, no number past Python's digit limit,
no nesting past the recursion limit, one object per row, in one of the formats of
:mod:`solo_cli.data.formats`. A JSONL row is named ``file:line``, an array's ``file row N``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import UsageError
from .formats import check_json_row, ignored_keys


def lone_surrogate(row) -> str | None:
    """The first lone surrogate (an unpaired ``\\ud800``-style escape) in any key or string of ``row``.

    Such a string is not text: it cannot be encoded as UTF-8, tokenized or printed.
    """
    stack = [row]
    while stack:  # iterative: rows may be nested as deep as the JSON reader allows
        value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                return value[exc.start]
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return None


def _parse(text: str, where: str, what: str):
    """One JSON value from ``text``, refusing, with ``where`` and the fix, what nothing downstream can use."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"{exc.colno}" if what == _LINE else f"{exc.lineno}:{exc.colno}"
        raise UsageError(f"{where}:{at}: not valid JSON ({exc.msg}); {what}") from None
    except RecursionError:
        raise UsageError(f"{where}: JSON nested too deeply to read; flatten the row (a few levels are plenty)") from None
    except ValueError as exc:  # int() refused a literal longer than sys.get_int_max_str_digits()
        if "digits" in str(exc):
            raise UsageError(
                f"{where}: a number with more than {sys.get_int_max_str_digits()} digits; "
                "write it as a string (in quotes) or remove it"
            ) from None
        raise UsageError(f"{where}: not valid JSON ({exc}); {what}") from None
    return value


def refuse_surrogates(value, where: str) -> None:
    """Refuse a value holding a lone surrogate, naming ``where``: the one rule of every source."""
    char = lone_surrogate(value)
    if char is not None:
        raise UsageError(
            f"{where}: a string holds a lone surrogate \\u{ord(char):04x} (half of a UTF-16 pair, not a character); "
            "fix or remove that escape"
        )


_LINE = "each line must be one JSON object"
_ARRAY = "the file must be one JSON array of objects, or one object per line"


def parse_json_line(line: str, where: str):
    """One JSON value from one line, or a :class:`UsageError` naming ``where`` and the fix.

    Beyond syntax errors this refuses what ``json.loads`` parses but nothing downstream can use:
    integers longer than Python's digit limit, nesting deeper than the recursion limit, and
    strings holding lone surrogates.
    """
    value = _parse(line, where, _LINE)
    refuse_surrogates(value, where)
    return value


def lines(path: Path, keepends: bool = False):
    """(line number, decoded line) of a UTF-8 file, one line at a time; an optional BOM is dropped.

    Split on "\n" only: JSON strings may hold U+2028 and friends, which splitlines() breaks on.
    ``keepends`` keeps each line's "\n" (a CSV reader needs it inside quoted cells).
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, after the last line
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror})") from None
    with handle:
        offset = 0  # bytes before this line, after the BOM (where a whole-file decode counts from)
        try:
            for lineno, raw in enumerate(handle, start=1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise UsageError(
                        f"{path}:{lineno}: not UTF-8 (byte {offset + exc.start}); re-save the file as UTF-8"
                    ) from None
                yield lineno, text if keepends else text.removesuffix("\n").removesuffix("\r")
                offset += len(raw)
        except OSError as exc:  # a folder opens on some systems and fails on the first read
            raise UsageError(f"{path}: cannot read it ({exc.strerror})") from None


def json_objects(path: str | Path):
    """``(where, line number, value)`` for each JSON value of a JSONL file (blank lines skipped, counted)."""
    path = Path(path)
    for lineno, line in lines(path):
        if line.strip():
            where = f"{path}:{lineno}"
            yield where, lineno, parse_json_line(line, where)


def json_array(path: str | Path) -> list[tuple[str, int, object]]:
    """``(where, row number, value)`` for each element of a file holding one JSON array; ``where`` is ``file row N``.

    The same rules as a JSONL file's lines (UTF-8, no lone surrogate, ...); an element is named
    by its place in the array, from 1.
    """
    path = Path(path)
    text = "".join(line for _, line in lines(path, keepends=True))
    value = _parse(text, str(path), _ARRAY)
    if not isinstance(value, list):
        raise UsageError(f"{path}: expected a JSON array of rows, got {type(value).__name__}; {_ARRAY}")
    rows = [(f"{path} row {n}", n, row) for n, row in enumerate(value, start=1)]
    for where, _, row in rows:
        refuse_surrogates(row, where)
    return rows


def check_one_format(rows, unit: str = "line"):
    """Check ``(where, number, value)`` rows as rows of one format; yield ``(number, row, format name, ignored keys)``.

    ``number`` is the row's line (JSONL) or its place in a JSON array (``unit`` says which); ``row``
    holds the format's fields, and ``ignored`` lists the row's other keys, which are left out.
    """
    fmt, first = None, 0
    for where, number, value in rows:
        row_format, row = check_json_row(value, where)
        if fmt is None:
            fmt, first = row_format, number
        elif row_format is not fmt:
            raise UsageError(
                f"{where}: a {row_format.name!r} row in a file of {fmt.name!r} rows ({unit} {first}); use one format per file"
            )
        yield number, row, fmt.name, ignored_keys(value, fmt)
