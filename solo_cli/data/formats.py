"""The row formats solo reads: their fields, the field trained on, their Arrow columns and the checks of a row.

Four formats, one per split:

- ``text``: ``{"text"}``, trained on all of it;
- ``completion``: ``{"prompt", "completion"}`` and optional ``"references"``, trained on the completion;
- ``chat``: ``{"messages": [{"role", "content"}, ...]}``, trained on the assistant turns;
- ``prompt``: ``{"prompt"}`` and optional ``"references"``: prompts to generate from (``solo eval``,
  ``solo generate --input``), nothing to train on.

Every source's rows pass the same checks, with the same words: a row is named where it is
(``train.jsonl:7``, ``train.csv row 3``), a field by its JSON key (``key "prompt"``) or by the
source column it came from (``column "answer"``). An optional field that is null is absent: a
table has every column in every row, so a row without ``references`` holds null there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UsageError

ROLES = {"system", "user", "assistant", "tool"}
STRING, STRINGS, MESSAGES = "string", "list of strings", "messages"
KINDS = {"text": STRING, "prompt": STRING, "completion": STRING, "references": STRINGS, "messages": MESSAGES}
HOW = 'use {"text"}, {"prompt", "completion"} or {"messages": [{"role", "content"}, ...]}'


@dataclass(frozen=True)
class Format:
    """One row format: the fields every row has, those it may have, and the string field that must not be blank."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    trained: str | None = None  # None for chat rows, which train their assistant turns
    trainable: bool = True

    @property
    def fields(self) -> tuple[str, ...]:
        return self.required + self.optional

    def fits(self, keys) -> bool:
        """Whether a JSON object with these ``keys`` is a row of this format (every required key, no unknown one)."""
        keys = set(keys)
        return set(self.required) <= keys <= set(self.fields)

    def features(self, *extra: tuple[str, str]):
        """The Arrow columns of this format's rows (``datasets.Features``), plus ``extra`` (name, dtype) columns."""
        from datasets import Features, List, Value

        string = Value("string")
        kinds = {STRING: string, STRINGS: List(string), MESSAGES: List({"role": string, "content": string})}
        return Features({**{f: kinds[KINDS[f]] for f in self.fields}, **{name: Value(dtype) for name, dtype in extra}})


TEXT = Format("text", ("text",), trained="text")
COMPLETION = Format("completion", ("prompt", "completion"), ("references",), trained="completion")
CHAT = Format("chat", ("messages",))
PROMPT = Format("prompt", ("prompt",), ("references",), trained="prompt", trainable=False)
FORMATS = {f.name: f for f in (TEXT, COMPLETION, CHAT, PROMPT)}


def by_keys(keys) -> Format | None:
    """The format of a JSON object with these keys, or ``None``."""
    return next((f for f in FORMATS.values() if f.fits(keys)), None)


def by_field(field: str) -> Format:
    """The trainable format whose required fields hold ``field`` (``prompt`` -> completion)."""
    return next(f for f in FORMATS.values() if f.trainable and field in f.required)


def by_columns(columns) -> list[Format]:
    """The trainable formats whose every required field is a column here."""
    return [f for f in (CHAT, COMPLETION, TEXT) if all(name in columns for name in f.required)]


def strip_nulls(row: dict) -> dict:
    """``row`` without its null fields, and its messages without their null fields (a table's absent ones)."""
    row = {k: v for k, v in row.items() if v is not None}
    if isinstance(row.get("messages"), list):
        row["messages"] = [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in row["messages"]]
    return row


def describe(value) -> str:
    """How a message names a value's type: ``null``, ``int (7)``, ``list``."""
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float)):
        shown = repr(value)
        return f"{type(value).__name__} ({shown if len(shown) <= 20 else shown[:20] + '...'})"
    return type(value).__name__


def _shown(value) -> str:
    return repr(value) if isinstance(value, str) and len(value) <= 20 else describe(value)


def json_key(where: str) -> Callable[[str], str]:
    """How a JSON row's field is named in a message: ``train.jsonl:7, key "prompt"``."""
    return lambda key: f'{where}, key "{key}"'


def table_column(where: str, origin: dict[str, str]) -> Callable[[str], str]:
    """How a table row's field is named: by the source column it came from (``train.csv row 3, column "answer"``)."""
    return lambda field: f'{where}, column "{origin.get(field, field)}"'


def check_string(value, at: str, field: str, trained: bool) -> None:
    if not isinstance(value, str):
        fix = "fill it in or drop the row" if value is None else "store text there, or drop the row"
        raise UsageError(f"{at}: expected a string, got {describe(value)}; {fix}")
    if trained and not value.strip():
        raise UsageError(f"{at}: the {field} is empty; fill it in or drop the row")


def check_references(refs, at: str) -> None:
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise UsageError(f"{at}: expected a non-empty list of strings, got {describe(refs)}; fix it or leave the field out")


def check_messages(messages, at: str) -> None:
    """Refuse a conversation solo cannot train on, naming ``at`` and the message at fault."""
    if not isinstance(messages, list) or not messages:
        got = "an empty list" if messages == [] else describe(messages)
        raise UsageError(f'{at}: expected a non-empty list of {{"role", "content"}} messages, got {got}')
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise UsageError(f'{at}: message {n} must be an object with exactly "role" and "content"')
        role, content = message["role"], message["content"]
        if not isinstance(role, str) or role not in ROLES or not isinstance(content, str):
            got = f"role {_shown(role)}" if not isinstance(role, str) or role not in ROLES else f"content {describe(content)}"
            raise UsageError(f"{at}: message {n} needs a role in {sorted(ROLES)} and a string content; got {got}")
        if message["role"] == "assistant" and not message["content"].strip():
            raise UsageError(f"{at}: message {n} is an empty assistant turn; fill it in or remove the row")
    if messages[0]["role"] == "assistant":
        raise UsageError(f"{at}: message 0 is an assistant turn; start the conversation with a system or user message")
    if not any(m["role"] == "assistant" for m in messages):
        raise UsageError(f"{at}: no assistant message, so there is nothing to train on")


def check_field(fmt: Format, field: str, value, at: str) -> None:
    """Refuse ``value`` as ``field`` of a ``fmt`` row (``at`` names it); null is absent for an optional field."""
    kind = KINDS[field]
    if kind == STRING:
        check_string(value, at, field, field == fmt.trained)
    elif kind == MESSAGES:
        check_messages(value, at)
    elif value is not None:
        check_references(value, at)


def check_fields(row: dict, fmt: Format, name: Callable[[str], str]) -> dict:
    """Check every field of a ``fmt`` row (a missing one is null); return the row without its null fields.

    ``name(field)`` names a field in a message (:func:`json_key`, :func:`table_column`).
    """
    row = strip_nulls(row)
    for field in fmt.fields:
        if field in row or field in fmt.required:
            check_field(fmt, field, row.get(field), name(field))
    return row


def check_json_row(row, where: str) -> tuple[Format, dict]:
    """The format of one JSON row and the row itself, or a :class:`UsageError` naming ``where`` and the fix."""
    if not isinstance(row, dict):
        raise UsageError(f"{where}: expected a JSON object, got {describe(row)}")
    fmt = by_keys(row)
    if fmt is None:
        raise UsageError(f"{where}: keys {sorted(row)} match no format; {HOW}")
    return fmt, check_fields(row, fmt, json_key(where))
