"""Data rows: reading JSONL files, checking each row's format, naming the file and line of a bad one.

Three row formats, one per file: ``{"text"}``, ``{"prompt", "completion"}`` and
``{"messages": [{"role", "content"}, ...]}``. Loss masks come from token offsets into the
rendered text, never from searching for strings.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError, param

FORMATS = {
    "text": ({"text"}, set()),
    "completion": ({"prompt", "completion"}, {"references"}),
    "chat": ({"messages"}, set()),
    "prompt": ({"prompt"}, {"references"}),  # prompts to generate from (eval, generate --input); not trainable
}
ROLES = {"system", "user", "assistant", "tool"}


@dataclass
class DataFiles:
    train: Path
    valid: Path | None = None
    test: Path | None = None


def resolve_data(path: str | Path) -> DataFiles:
    """``--data`` is a JSONL file (training rows) or a folder with train.jsonl [valid.jsonl test.jsonl]."""
    path = Path(path)
    if path.is_dir():
        train = path / "train.jsonl"
        if not train.is_file():
            raise UsageError(f"{param('data')} {path}: the folder has no train.jsonl; add one or pass a .jsonl file")
        optional = {name: path / f"{name}.jsonl" for name in ("valid", "test")}
        return DataFiles(train, *(p if p.is_file() else None for p in optional.values()))
    if path.exists() and not path.is_file():  # a FIFO would be read forever
        raise UsageError(f"{param('data')} {path}: not a regular file (a FIFO, socket or device); pass a .jsonl file or a folder")
    if not path.is_file():
        raise UsageError(f"{param('data')} {path}: no such file or folder; pass a .jsonl file or a folder with train.jsonl")
    return DataFiles(path)


def detect_format(row: dict) -> str | None:
    keys = set(row)
    for name, (required, optional) in FORMATS.items():
        if required <= keys and keys <= required | optional:
            return name
    return None


def check_messages(messages: list, where: str) -> None:
    """Refuse a conversation solo cannot train on, naming ``where`` and the message at fault."""
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise UsageError(f'{where}: message {n} must be an object with exactly "role" and "content"')
        if not isinstance(message["role"], str) or message["role"] not in ROLES or not isinstance(message["content"], str):
            raise UsageError(f"{where}: message {n} needs a role in {sorted(ROLES)} and a string content")
        if message["role"] == "assistant" and not message["content"].strip():
            raise UsageError(f"{where}: message {n} is an empty assistant turn; fill it in or remove the row")
    if messages[0]["role"] == "assistant":
        raise UsageError(f"{where}: message 0 is an assistant turn; start the conversation with a system or user message")
    if not any(m["role"] == "assistant" for m in messages):
        raise UsageError(f"{where}: no assistant message, so there is nothing to train on")


def _check_row(row, where: str) -> str:
    """Return the row's format, or raise naming the line and what is wrong."""
    if not isinstance(row, dict):
        raise UsageError(f"{where}: expected a JSON object, got {type(row).__name__}")
    fmt = detect_format(row)
    if fmt is None:
        raise UsageError(
            f'{where}: keys {sorted(row)} match no format; use {{"text"}}, {{"prompt", "completion"}} '
            'or {"messages": [{"role", "content"}, ...]}'
        )
    if fmt == "chat":
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise UsageError(f'{where}: "messages" must be a non-empty list of {{"role", "content"}}')
        check_messages(messages, where)
    else:
        for key in FORMATS[fmt][0]:
            if not isinstance(row[key], str):
                raise UsageError(f'{where}: "{key}" must be a string, got {type(row[key]).__name__}')
        trained = {"text": "text", "completion": "completion", "prompt": "prompt"}[fmt]
        if fmt == "prompt" and "references" in row:
            refs = row["references"]
            if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
                raise UsageError(f'{where}: "references" must be a non-empty list of strings')
        if not row[trained].strip():
            raise UsageError(f'{where}: "{trained}" is empty; remove the row or fill it in')
    return fmt


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


def parse_json_line(line: str, where: str):
    """One JSON value from one line, or a :class:`UsageError` naming ``where`` and the fix.

    Beyond syntax errors this refuses what ``json.loads`` parses but nothing downstream can use:
    integers longer than Python's digit limit, nesting deeper than the recursion limit, and
    strings holding lone surrogates.
    """
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}:{exc.colno}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
    except RecursionError:
        raise UsageError(f"{where}: JSON nested too deeply to read; flatten the row (a few levels are plenty)") from None
    except ValueError as exc:  # int() refused a literal longer than sys.get_int_max_str_digits()
        if "digits" in str(exc):
            raise UsageError(
                f"{where}: a number with more than {sys.get_int_max_str_digits()} digits; "
                "write it as a string (in quotes) or remove it"
            ) from None
        raise UsageError(f"{where}: not valid JSON ({exc}); each line must be one JSON object") from None
    char = lone_surrogate(value)
    if char is not None:
        raise UsageError(
            f"{where}: a string holds a lone surrogate \\u{ord(char):04x} (half of a UTF-16 pair, not a character); "
            "fix or remove that escape"
        )
    return value


def read_rows(path: str | Path) -> tuple[list[dict], str]:
    """Read and check every row of a JSONL file; return the rows and their (single) format."""
    rows, fmt, _ = read_numbered_rows(path)
    return rows, fmt


def read_numbered_rows(path: str | Path) -> tuple[list[dict], str, list[int]]:
    """:func:`read_rows`, plus the line number of each row (blank lines are skipped but counted)."""
    rows, linenos, formats = [], [], set()
    for lineno, row, fmt in iter_rows(path):
        rows.append(row)
        linenos.append(lineno)
        formats.add(fmt)  # one format: iter_rows refuses a second
    return rows, formats.pop(), linenos


def _lines(path: Path):
    """(line number, decoded line) of a UTF-8 file, one line at a time; an optional BOM is dropped.

    Split on "\n" only: JSON strings may hold U+2028 and friends, which splitlines() breaks on.
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
                    yield lineno, raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
                except UnicodeDecodeError as exc:
                    raise UsageError(
                        f"{path}:{lineno}: not UTF-8 (byte {offset + exc.start}); re-save the file as UTF-8"
                    ) from None
                offset += len(raw)
        except OSError as exc:  # a folder opens on some systems and fails on the first read
            raise UsageError(f"{path}: cannot read it ({exc.strerror})") from None


def iter_rows(path: str | Path):
    """Check and yield ``(line number, row, format)`` for each row of a JSONL file, one at a time.

    The same checks and messages as :func:`read_numbered_rows`, without holding the file or its
    rows in memory: the streaming reader behind JSONL sources of any size.
    """
    path = Path(path)
    fmt, first_line = None, 0
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        row = parse_json_line(line, where)
        row_format = _check_row(row, where)
        if fmt is None:
            fmt, first_line = row_format, lineno
        elif row_format != fmt:
            raise UsageError(
                f"{where}: a {row_format!r} row in a file of {fmt!r} rows (line {first_line}); use one format per file"
            )
        yield lineno, row, fmt
    if fmt is None:
        raise UsageError(f'{path}: the file has no rows; add JSONL rows such as {{"prompt": ..., "completion": ...}}')
