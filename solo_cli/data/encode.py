"""Encoding rows into token ids with loss masks, and padding them into batches.

Loss masks come from token offsets into the rendered text, never from searching for strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import UsageError, param

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
    examples: Sequence[Example]  # a list, or an ExampleView over the Arrow dataset (solo_cli.data.examples)
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
            raise UsageError(f"this tokenizer's chat template is not prefix-stable; train with {param('train_on_prompt')}")
        spans.append((start, len(upto)))
    return text, spans, False


def encode(row: dict, fmt: str, tokenizer, *, use_chat: bool, train_on_prompt: bool, max_len: int) -> Example | None:
    """Tokenize one row with its loss mask; ``None`` if its prompt alone fills ``max_len``."""
    text, spans, add_eos = render(row, fmt, tokenizer, use_chat)
    enc = tokenizer(text, add_special_tokens=not use_chat, return_offsets_mapping=True)
    eos = tokenizer.eos_token_id if add_eos else None
    return masked(enc["input_ids"], enc["offset_mapping"], spans, eos, train_on_prompt=train_on_prompt, max_len=max_len)


def masked(ids, offsets, spans, eos: int | None, *, train_on_prompt: bool, max_len: int) -> Example | None:
    """The :class:`Example` of one tokenized text: loss on the tokens inside ``spans``, ``eos`` appended
    (and trained) unless ``None``, cut to ``max_len``; ``None`` if no trained token fits."""
    ids = list(ids)
    trained = [train_on_prompt or any(s < end and e > start for start, end in spans) for s, e in offsets]
    if eos is not None:
        ids.append(eos)
        trained.append(True)
    first = next((n for n, t in enumerate(trained) if t), len(ids))
    if first >= max_len:
        return None
    truncated = len(ids) > max_len
    ids, trained = ids[:max_len], trained[:max_len]
    labels = [i if t else -100 for i, t in zip(ids, trained)]
    return Example(ids, labels, truncated)


def token_limit(max_len: int, context: int | None, tokenizer) -> int:
    """``min(max_len, context)``; without ``context``, the limit the tokenizer declares, if any."""
    context = context if context is not None else tokenizer_context(tokenizer)
    return min(max_len, context) if context else max_len


def summarize(rows: int, examples: int, truncated: int, tokens: int, trained: int, longest: int) -> dict:
    """The stats of an encoding, as :attr:`EncodedData.stats` holds them."""
    return {
        "rows": rows,
        "examples": examples,
        "skipped_prompt_too_long": rows - examples,
        "truncated": truncated,
        "tokens": tokens,
        "trained_tokens": trained,
        "max_length": longest,
        "mean_length": round(tokens / max(1, examples), 1),
    }


def encode_rows(
    rows, fmt, tokenizer, *, chat_template: bool | None, train_on_prompt: bool, max_len: int, context: int | None = None
) -> EncodedData:
    """Tokenize every row, cutting each example to ``min(max_len, context)`` tokens.

    ``context`` is the model's context length (:func:`context_length`); a model fed more positions
    than it has fails inside torch. Without it, the limit the tokenizer declares is used, if any.
    Rows whose prompt alone reaches the limit are skipped and counted in ``skipped``.
    """
    use_chat = uses_chat_template(fmt, tokenizer, chat_template)
    limit = token_limit(max_len, context, tokenizer)
    examples, skipped, truncated = [], 0, 0
    for row in rows:
        example = encode(row, fmt, tokenizer, use_chat=use_chat, train_on_prompt=train_on_prompt, max_len=limit)
        if example is None:
            skipped += 1
            continue
        truncated += example.truncated
        examples.append(example)
    lengths = [len(e.input_ids) for e in examples]
    trained = sum(sum(lab != -100 for lab in e.labels) for e in examples)
    stats = summarize(len(rows), len(examples), truncated, sum(lengths), trained, max(lengths, default=0))
    return EncodedData(examples, fmt, use_chat, skipped, truncated, stats, limit)


def collate(examples: Sequence[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch; padding never carries loss (the mask comes from the lengths, not the pad id).

    ``loss_positions`` lists the flat positions that predict a trained token (see causal_lm_loss).
    """
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for n, e in enumerate(examples):
        ids[n, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[n, : len(e.labels)] = torch.tensor(e.labels)
        mask[n, : len(e.input_ids)] = 1
    # Where the loss is taken, worked out here on the CPU: position t of row b predicts labels[b, t + 1],
    # flattened to b * (width - 1) + t. The loss then needs no device-to-host read to find them.
    positions = (labels[:, 1:] != -100).reshape(-1).nonzero().squeeze(1)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "loss_positions": positions}
