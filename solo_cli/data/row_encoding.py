"""How one row becomes an :class:`Example` (token ids with a loss mask), and examples a padded batch.

A row is rendered to text and the character spans that carry loss (:func:`render`); the tokens
inside those spans are trained (:func:`masked`). A chat turn's span is what rendering the
conversation up to it adds, and its reply is looked for only inside that turn. Whole splits are
tokenized by :func:`solo_cli.data.split_encoding.encode_rowset`, which applies these rules in batches.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import UsageError, param
from .chat_template import render_chat
from .formats import FORMATS

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
    key: str = ""  # the name of the encoded split in the cache (what a reference pass over it is cached under)


def uses_chat_template(fmt: str, tokenizer, chat_template: bool | None) -> bool:
    """Chat rows always use the template; prompt/completion rows use it when the tokenizer has one
    (as mlx-lm does), unless ``chat_template`` says otherwise; text rows never do. A preference pair
    follows the rows its replies are rendered as (conversational: chat; else prompt/completion)."""
    if fmt in FORMATS and FORMATS[fmt].scored_as:
        fmt = FORMATS[fmt].scored_as
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


def render(
    row: dict, fmt: str, tokenizer, use_chat: bool, *, train_on_prompt: bool = False
) -> tuple[str, list[tuple[int, int]], bool]:
    """The text to tokenize, the character spans that carry loss, and whether to append EOS.

    With a chat template, each assistant turn's span is found by matching renderings (see
    :func:`_assistant_spans`). With ``train_on_prompt`` every character is trained, so no span is
    looked for and a template without a correct span is accepted.
    """
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
    text = render_chat(tokenizer, messages)
    if train_on_prompt:
        return text, [(0, len(text))], False
    return text, _assistant_spans(messages, text, tokenizer), False


def _assistant_spans(messages: list[dict], text: str, tokenizer) -> list[tuple[int, int]]:
    """The span of ``text`` each assistant turn trains: from where its reply starts to the end of its turn.

    A turn is what rendering messages ``0..k`` adds to rendering ``0..k-1``, so both renderings must
    be prefixes of ``text``. Where the reply starts inside the turn is matched, not measured: a
    generation prompt need not be a prefix of the rendered turn (DeepSeek-R1 distills and QwQ end
    theirs with ``<think>\n``, which the turn lacks), so its length would start the span inside the
    reply (see :func:`_reply_start`).

    Where no correct span exists this refuses rather than warns: a warning would come once per row
    and the run would still train on text other than the reply, which is what it must never do.
    """

    def rendered(n: int, prompt: bool = False) -> str:
        return render_chat(tokenizer, messages[:n], add_generation_prompt=prompt)

    spans = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, upto = rendered(k), rendered(k + 1)
        if not (upto.startswith(before) and text.startswith(upto)):
            raise UsageError(
                "this tokenizer's chat template renders earlier turns differently once later ones follow, so "
                f"the assistant turns cannot be found in the text; train on every token with {param('train_on_prompt')}"
            )
        start = _reply_start(message["content"], before, upto, rendered(k, prompt=True))
        if start is None:
            shown = message["content"] if len(message["content"]) <= 40 else message["content"][:40] + "..."
            raise UsageError(
                f"the chat template does not render assistant message {k} ({shown!r}) as written (it changes or "
                "drops part of it, such as reasoning before </think>), so the text trained would not be the reply; "
                "write the reply as the template renders it, or give prompt/completion rows and "
                f"{param('chat_template')} off"
            )
        spans.append((start, len(upto)))
    return spans


def _reply_start(content, before: str, upto: str, prompted: str) -> int | None:
    """Where the trained part of one assistant turn starts in ``upto``; ``None`` if the reply is not in it.

    ``before`` renders the turns before it, ``upto`` adds the turn, ``prompted`` adds the generation
    prompt instead. The header ends where ``prompted`` and ``upto`` part. The span starts there when
    the reply (as given, or stripped of the whitespace templates such as Llama 3's trim) follows it,
    so template text between header and reply (Qwen3's empty think block) is trained as generated.
    When the reply starts inside the common part (a reply that itself opens with ``<think>``, which the
    generation prompt also ends with), the span starts at the reply instead: never inside it.
    """
    header_end = max(len(before), len(os.path.commonprefix([prompted, upto])))
    if not isinstance(content, str):
        return header_end
    for wanted in dict.fromkeys((content, content.strip())):
        if upto.find(wanted, header_end) >= 0:
            return header_end
        # The last occurrence that starts inside the common part (and ends inside the turn).
        inside = upto.rfind(wanted, len(before), header_end + len(wanted))
        if inside >= 0:
            return inside
    return None


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


def loss_tokens(labels: Sequence[int]) -> int:
    """How many of ``labels`` a causal LM loss scores: those after the first that are not -100.

    Position ``t`` predicts label ``t + 1``, so position 0's label is never predicted, whatever it is
    (a text row trains its first token but no loss scores it). Every count of trained or scored
    tokens (stats, ``solo eval``'s ``loss_tokens``, the trainer's loss weights) is this one;
    :func:`solo_cli.data.split_encoding._stats` computes the same over Arrow columns.
    """
    return sum(label != -100 for label in labels[1:])


def summarize(rows: int, examples: int, truncated: int, tokens: int, trained: int, longest: int) -> dict:
    """The stats of an encoding, as :attr:`EncodedData.stats` holds them; ``trained`` counts the tokens
    a loss scores (:func:`loss_tokens`)."""
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
