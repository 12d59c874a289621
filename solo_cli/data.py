"""Training data: reading JSONL rows, checking their format, and turning them into token batches.

Three row formats, one per file: ``{"text"}``, ``{"prompt", "completion"}`` and
``{"messages": [{"role", "content"}, ...]}``. Loss masks come from token offsets into the
rendered text, never from searching for strings.
"""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import UsageError

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
            raise UsageError(f"--data {path}: the folder has no train.jsonl; add one or pass a .jsonl file")
        optional = {name: path / f"{name}.jsonl" for name in ("valid", "test")}
        return DataFiles(train, *(p if p.is_file() else None for p in optional.values()))
    if path.exists() and not path.is_file():  # a FIFO would be read forever
        raise UsageError(f"--data {path}: not a regular file (a FIFO, socket or device); pass a .jsonl file or a folder")
    if not path.is_file():
        raise UsageError(f"--data {path}: no such file or folder; pass a .jsonl file or a folder with train.jsonl")
    return DataFiles(path)


def detect_format(row: dict) -> str | None:
    keys = set(row)
    for name, (required, optional) in FORMATS.items():
        if required <= keys and keys <= required | optional:
            return name
    return None


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
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: not UTF-8 (byte {exc.start}); re-save the file as UTF-8") from None
    rows, linenos, fmt, first_line = [], [], None, 0
    # Split on "\n" only: JSON strings may hold U+2028 and friends, which splitlines() breaks on.
    for lineno, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
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
        rows.append(row)
        linenos.append(lineno)
    if not rows:
        raise UsageError(f'{path}: the file has no rows; add JSONL rows such as {{"prompt": ..., "completion": ...}}')
    return rows, fmt, linenos


# Tokenizers without a declared limit report transformers' VERY_LARGE_INTEGER (1e30).
_UNDECLARED = 10**9


def context_length(model) -> int | None:
    """The most positions ``model`` can attend over, from its config; ``None`` if it declares none.

    Read from ``max_position_embeddings`` (Llama, Qwen2, GPT-NeoX, ...), ``n_positions`` or
    ``n_ctx`` (GPT-2); a model past its context fails inside torch (GPT-2: IndexError).
    """
    config = getattr(model, "config", None)
    if config is None:
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(text_config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < _UNDECLARED:
            return value
    return None


def tokenizer_context(tokenizer) -> int | None:
    """The sequence limit a tokenizer declares (``model_max_length``: GPT-2's is 1024), if any."""
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < _UNDECLARED else None


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # -100 where no loss is taken
    truncated: bool = False


@dataclass
class EncodedData:
    examples: list[Example]
    fmt: str
    chat_template: bool
    skipped: int = 0  # rows whose prompt alone was longer than the sequence limit
    truncated: int = 0
    stats: dict = field(default_factory=dict)
    limit: int = 0  # the token limit applied: min(max_len, the model's context)


def uses_chat_template(fmt: str, tokenizer, chat_template: bool | None) -> bool:
    """Chat rows always use the template; prompt/completion rows use it when the tokenizer has one
    (as mlx-lm does), unless ``chat_template`` says otherwise; text rows never do."""
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if fmt == "chat":
        if not has_template:
            raise UsageError("chat rows need a tokenizer with a chat template; this model has none, use prompt/completion rows")
        return True
    if fmt == "text":
        return False
    if fmt == "prompt":
        raise UsageError('rows with only a "prompt" have nothing to train on; add a "completion" to each row')
    return has_template if chat_template is None else (chat_template and has_template)


def render(row: dict, fmt: str, tokenizer, use_chat: bool) -> tuple[str, list[tuple[int, int]], bool]:
    """The text to tokenize, the character spans that carry loss, and whether to append EOS."""
    if fmt == "text":
        return row["text"], [(0, len(row["text"]))], True
    if not use_chat:
        text = row["prompt"] + row["completion"]
        return text, [(len(row["prompt"]), len(text))], True
    messages = (
        row["messages"]
        if fmt == "chat"
        else [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
    )
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        # The assistant turn is what the full rendering of turns 0..k adds to the rendering of
        # turns 0..k-1 plus the generation prompt: offsets, not a search for the content.
        start = len(tokenizer.apply_chat_template(messages[:k], tokenize=False, add_generation_prompt=True))
        upto = tokenizer.apply_chat_template(messages[: k + 1], tokenize=False)
        if not text.startswith(upto) or start > len(upto):
            raise UsageError("this tokenizer's chat template is not prefix-stable; train with --train-on-prompt")
        spans.append((start, len(upto)))
    return text, spans, False


def encode(row: dict, fmt: str, tokenizer, *, use_chat: bool, train_on_prompt: bool, max_len: int) -> Example | None:
    """Tokenize one row with its loss mask; ``None`` if its prompt alone fills ``max_len``."""
    text, spans, add_eos = render(row, fmt, tokenizer, use_chat)
    enc = tokenizer(text, add_special_tokens=not use_chat, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    trained = [train_on_prompt or any(s < end and e > start for start, end in spans) for s, e in offsets]
    if add_eos and tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
        trained.append(True)
    first = next((n for n, t in enumerate(trained) if t), len(ids))
    if first >= max_len:
        return None
    truncated = len(ids) > max_len
    ids, trained = ids[:max_len], trained[:max_len]
    labels = [i if t else -100 for i, t in zip(ids, trained)]
    return Example(ids, labels, truncated)


def encode_rows(
    rows, fmt, tokenizer, *, chat_template: bool | None, train_on_prompt: bool, max_len: int, context: int | None = None
) -> EncodedData:
    """Tokenize every row, cutting each example to ``min(max_len, context)`` tokens.

    ``context`` is the model's context length (:func:`context_length`); a model fed more positions
    than it has fails inside torch. Without it, the limit the tokenizer declares is used, if any.
    Rows whose prompt alone reaches the limit are skipped and counted in ``skipped``.
    """
    use_chat = uses_chat_template(fmt, tokenizer, chat_template)
    context = context if context is not None else tokenizer_context(tokenizer)
    limit = min(max_len, context) if context else max_len
    examples, skipped, truncated = [], 0, 0
    for row in rows:
        example = encode(row, fmt, tokenizer, use_chat=use_chat, train_on_prompt=train_on_prompt, max_len=limit)
        if example is None:
            skipped += 1
            continue
        truncated += example.truncated
        examples.append(example)
    lengths = [len(e.input_ids) for e in examples]
    stats = {
        "rows": len(rows),
        "examples": len(examples),
        "skipped_prompt_too_long": skipped,
        "truncated": truncated,
        "tokens": sum(lengths),
        "trained_tokens": sum(sum(lab != -100 for lab in e.labels) for e in examples),
        "max_length": max(lengths, default=0),
        "mean_length": round(sum(lengths) / max(1, len(lengths)), 1),
    }
    return EncodedData(examples, fmt, use_chat, skipped, truncated, stats, limit)


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding never carries loss (the mask comes from the lengths, not the pad id)."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for n, e in enumerate(examples):
        ids[n, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[n, : len(e.labels)] = torch.tensor(e.labels)
        mask[n, : len(e.input_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def epoch_order(num_examples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of one epoch: a pure function of seed and epoch, so resumable."""
    order = list(range(num_examples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order
