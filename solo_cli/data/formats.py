"""The row formats solo reads: their fields, the fields trained on, their Arrow columns and the checks of a row.

These formats, one per split:

- ``text``: ``{"text"}``, trained on all of it;
- ``completion``: ``{"prompt", "completion"}`` and optional ``"references"``, trained on the completion;
- ``chat``: ``{"messages": [{"role", "content"}, ...]}``, trained on the assistant turns;
- ``preference``: ``{"prompt", "chosen", "rejected"}`` strings, a pair of replies to one prompt
  (``solo train --objective dpo|orpo|simpo``, ``solo eval``'s pair accuracy);
- ``chat-preference``: the same keys as TRL reads them conversationally: ``prompt`` a list of
  messages, ``chosen`` and ``rejected`` the assistant's reply (a string, or a list of one
  assistant message; JSON rows store the list);
- ``prompt``: ``{"prompt"}`` and optional ``"references"``: prompts to generate from (``solo eval``,
  ``solo generate --input``), nothing to train on.

A row is of the format whose keys it has; keys no format uses (an ``id``, a ``source``) are
ignored, and the reader says once which. A row with the keys of two formats (``text`` and
``prompt`` + ``completion``) or of none is refused.

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
PROMPT_MESSAGES = "prompt messages"  # a conversation up to the reply: no assistant turn needed, none last
TURN = "assistant turn"  # a reply: a string, or a list of one assistant message
KINDS = {
    "text": STRING,
    "prompt": STRING,
    "completion": STRING,
    "references": STRINGS,
    "messages": MESSAGES,
    "chosen": STRING,
    "rejected": STRING,
}
HOW = 'use {"text"}, {"prompt", "completion"}, {"messages": [{"role", "content"}, ...]} or {"prompt", "chosen", "rejected"}'


@dataclass(frozen=True)
class Format:
    """One row format: the fields every row has, those it may have, and the string fields that must not be blank."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    trained: tuple[str, ...] = ()  # the string fields that must not be blank (chat rows check their assistant turns)
    trainable: bool = True
    kinds: tuple[tuple[str, str], ...] = ()  # (field, kind) where the field's kind is not KINDS'
    scored_as: str = ""  # preference pairs: the format each of prompt + chosen, prompt + rejected is rendered as

    @property
    def fields(self) -> tuple[str, ...]:
        return self.required + self.optional

    @property
    def pairs(self) -> bool:
        """Whether the rows are preference pairs (a chosen and a rejected reply to one prompt)."""
        return "chosen" in self.required

    def kind(self, field: str) -> str:
        """What ``field`` holds in this format's rows: STRING, STRINGS, MESSAGES, PROMPT_MESSAGES or TURN."""
        return dict(self.kinds).get(field, KINDS[field])

    def fits(self, keys) -> bool:
        """Whether a JSON object with these ``keys`` has every required key of this format (other keys are ignored)."""
        return set(self.required) <= set(keys)

    def features(self, *extra: tuple[str, object]):
        """The Arrow columns of this format's rows (``datasets.Features``), plus ``extra`` (name, dtype or feature) columns."""
        from datasets import Features, List, Value

        string = Value("string")
        messages = List({"role": string, "content": string})
        kinds = {STRING: string, STRINGS: List(string), MESSAGES: messages, PROMPT_MESSAGES: messages, TURN: messages}
        more = {name: Value(dtype) if isinstance(dtype, str) else dtype for name, dtype in extra}
        return Features({**{f: kinds[self.kind(f)] for f in self.fields}, **more})


TEXT = Format("text", ("text",), trained=("text",))
COMPLETION = Format("completion", ("prompt", "completion"), ("references",), trained=("completion",))
CHAT = Format("chat", ("messages",))
PROMPT = Format("prompt", ("prompt",), ("references",), trained=("prompt",), trainable=False)
PREFERENCE = Format("preference", ("prompt", "chosen", "rejected"), trained=("chosen", "rejected"), scored_as="completion")
CHAT_PREFERENCE = Format(
    "chat-preference",
    ("prompt", "chosen", "rejected"),
    trained=("chosen", "rejected"),
    kinds=(("prompt", PROMPT_MESSAGES), ("chosen", TURN), ("rejected", TURN)),
    scored_as="chat",
)
FORMATS = {f.name: f for f in (TEXT, COMPLETION, CHAT, PROMPT, PREFERENCE, CHAT_PREFERENCE)}
# Formats told apart by their keys; a preference row is conversational by its prompt (see conversational()).
_KEYED = (TEXT, COMPLETION, CHAT, PROMPT, PREFERENCE)
TRAINABLE = (TEXT, COMPLETION, CHAT, PREFERENCE)  # the formats a mapping of columns may name


def fitting(keys) -> list[Format]:
    """The formats a row with these keys is a row of: those whose required keys it has, less any whose keys another
    of them holds too (``prompt`` + ``completion`` is a completion row, not a prompt row with a stray key)."""
    fits = [f for f in _KEYED if f.fits(keys)]
    return [f for f in fits if not any(set(f.required) < set(g.required) for g in fits)]


def conversational(fmt: Format, prompt) -> Format:
    """``fmt``, or for a preference row whose ``prompt`` is a list of messages, the conversational pair format."""
    return CHAT_PREFERENCE if fmt is PREFERENCE and isinstance(prompt, list) else fmt


def by_columns(columns) -> list[Format]:
    """The trainable formats whose every required field is a column here."""
    return [f for f in (CHAT, COMPLETION, TEXT, PREFERENCE) if all(name in columns for name in f.required)]


def ignored_keys(keys, fmt: Format) -> list[str]:
    """The keys of a row (or columns of a table) that are no field of ``fmt``: what the reader leaves out."""
    return sorted(str(k) for k in keys if k not in fmt.fields)


def strip_nulls(row: dict) -> dict:
    """``row`` without its null fields, and its messages (of ``messages``, or a conversational pair's prompt and
    replies) without their null fields (a table's absent ones)."""
    row = {k: v for k, v in row.items() if v is not None}
    for key, value in row.items():
        if isinstance(value, list) and any(isinstance(m, dict) for m in value):
            row[key] = [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in value]
    return row


def value_type(value) -> str:
    """How a message names a value's type: ``null``, ``int (7)``, ``list``."""
    if value is None:
        return "null"
    if isinstance(value, (bool, int, float)):
        shown = repr(value)
        return f"{type(value).__name__} ({shown if len(shown) <= 20 else shown[:20] + '...'})"
    return type(value).__name__


def _shown(value) -> str:
    return repr(value) if isinstance(value, str) and len(value) <= 20 else value_type(value)


def json_key(where: str) -> Callable[[str], str]:
    """How a JSON row's field is named in a message: ``train.jsonl:7, key "prompt"``."""
    return lambda key: f'{where}, key "{key}"'


def table_column(where: str, origin: dict[str, str]) -> Callable[[str], str]:
    """How a table row's field is named: by the source column it came from (``train.csv row 3, column "answer"``)."""
    return lambda field: f'{where}, column "{origin.get(field, field)}"'


def check_string(value, at: str, field: str, trained: bool) -> None:
    if not isinstance(value, str):
        fix = "fill it in or drop the row" if value is None else "store text there, or drop the row"
        raise UsageError(f"{at}: expected a string, got {value_type(value)}; {fix}")
    if trained and not value.strip():
        raise UsageError(f"{at}: the {field} is empty; fill it in or drop the row")


def check_references(refs, at: str) -> None:
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise UsageError(f"{at}: expected a non-empty list of strings, got {value_type(refs)}; fix it or leave the field out")


def check_messages(messages, at: str, prompt: bool = False) -> None:
    """Refuse a conversation solo cannot train on, naming ``at`` and the message at fault.

    ``prompt``: the conversation a preference pair's replies continue, which needs no assistant
    turn and must not end with one.
    """
    if not isinstance(messages, list) or not messages:
        got = "an empty list" if messages == [] else value_type(messages)
        raise UsageError(f'{at}: expected a non-empty list of {{"role", "content"}} messages, got {got}')
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise UsageError(f'{at}: message {n} must be an object with exactly "role" and "content"')
        role, content = message["role"], message["content"]
        if not isinstance(role, str) or role not in ROLES or not isinstance(content, str):
            got = f"role {_shown(role)}" if not isinstance(role, str) or role not in ROLES else f"content {value_type(content)}"
            raise UsageError(f"{at}: message {n} needs a role in {sorted(ROLES)} and a string content; got {got}")
        if message["role"] == "assistant" and not message["content"].strip():
            raise UsageError(f"{at}: message {n} is an empty assistant turn; fill it in or remove the row")
    if messages[0]["role"] == "assistant":
        raise UsageError(f"{at}: message 0 is an assistant turn; start the conversation with a system or user message")
    if prompt and messages[-1]["role"] == "assistant":
        raise UsageError(f"{at}: the prompt ends with an assistant turn; the chosen and rejected replies follow it")
    if not prompt and not any(m["role"] == "assistant" for m in messages):
        raise UsageError(f"{at}: no assistant message, so there is nothing to train on")


def check_turn(value, at: str) -> None:
    """Refuse a preference reply that is neither a non-blank string nor a list of one assistant message."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        message = value[0]
        if set(message) == {"role", "content"} and message["role"] == "assistant" and isinstance(message["content"], str):
            value = message["content"]
    if not isinstance(value, str):
        raise UsageError(
            f'{at}: expected the reply, a string or a list of one {{"role": "assistant", "content"}} message; '
            f"got {value_type(value)}"
        )
    if not value.strip():
        raise UsageError(f"{at}: the reply is empty; fill it in or drop the row")


def turn_text(value) -> str:
    """The text of a checked preference reply (a string, or a list of one assistant message)."""
    return value if isinstance(value, str) else value[0]["content"]


def check_field(fmt: Format, field: str, value, at: str) -> None:
    """Refuse ``value`` as ``field`` of a ``fmt`` row (``at`` names it); null is absent for an optional field."""
    kind = fmt.kind(field)
    if kind == STRING:
        check_string(value, at, field, field in fmt.trained)
    elif kind in (MESSAGES, PROMPT_MESSAGES):
        check_messages(value, at, prompt=kind == PROMPT_MESSAGES)
    elif kind == TURN:
        check_turn(value, at)
    elif value is not None:
        check_references(value, at)


def check_fields(row: dict, fmt: Format, name: Callable[[str], str]) -> dict:
    """Check every field of a ``fmt`` row (a missing one is null); return the row's fields, less the null ones.

    ``name(field)`` names a field in a message (:func:`json_key`, :func:`table_column`). A reply of a
    conversational pair given as a string is returned as the list of one assistant message that its
    Arrow column holds.
    """
    row = strip_nulls({k: v for k, v in row.items() if k in fmt.fields})
    for field in fmt.fields:
        if field in row or field in fmt.required:
            check_field(fmt, field, row.get(field), name(field))
            if fmt.kind(field) == TURN and isinstance(row[field], str):
                row[field] = [{"role": "assistant", "content": row[field]}]
    return row


def check_json_row(row, where: str) -> tuple[Format, dict]:
    """The format of one JSON row and its fields (keys no format uses left out), or a :class:`UsageError` naming
    ``where`` and the fix."""
    if not isinstance(row, dict):
        raise UsageError(f"{where}: expected a JSON object, got {value_type(row)}")
    fits = fitting(row)
    if not fits:
        raise UsageError(f"{where}: keys {sorted(row)} match no format; {HOW}")
    if len(fits) > 1:
        names = " and ".join(f.name for f in fits)
        raise UsageError(f"{where}: keys {sorted(row)} mix the fields of {names} rows; keep one format's keys per row")
    fmt = conversational(fits[0], row.get("prompt"))
    return fmt, check_fields(row, fmt, json_key(where))
