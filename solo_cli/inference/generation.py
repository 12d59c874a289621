"""Text generation on top of transformers' ``generate``: prompts, batching, stop strings, streaming.

Nothing of decoding is written here; this module only builds inputs and settings.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from transformers import TextStreamer

from ..data.chat_template import render_chat
from ..data.row_encoding import context_length
from ..errors import UsageError, param
from .generation_settings import SEED_MAX, GenerationSettings  # noqa: F401 (importable from here as before)


def build_prompt(tokenizer, prompt: str | list[dict], chat: bool, where: str | None = None) -> str:
    """The text the model continues: the chat template with a generation prompt, or the prompt as is.

    A template that refuses the conversation raises one :class:`~solo_cli.data.chat_template.TemplateRefused`
    line quoting it, naming the prompt by ``where`` (``rows.jsonl:7``).
    """
    if isinstance(prompt, list):
        return render_chat(tokenizer, prompt, add_generation_prompt=True, where=where)
    if chat:
        return render_chat(tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True, where=where)
    return prompt


def check_chat_template(tokenizer, prompts: list[str | list[dict]], chat: bool, where: list[str]) -> None:
    """Refuse (UsageError) the chat template on a tokenizer that has none, before transformers fails on it.

    ``chat`` asks for it (``--chat``, or an adapter trained with it); a messages row needs it too
    (named by ``where``, e.g. ``rows.jsonl:7``).
    """
    if getattr(tokenizer, "chat_template", None):
        return
    if chat:
        raise UsageError(
            f"{param('chat')}: the model has no chat template; drop {param('chat')} (or pass --no-chat) "
            "to use the prompt as written"
        )
    for label, prompt in zip(where, prompts):
        if isinstance(prompt, list):
            raise UsageError(f"{label}: messages need a chat template, and the model has none; give a prompt instead")


class _CallbackStreamer(TextStreamer):
    """transformers' streamer, sending finished text pieces to a callback instead of stdout."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.on_text(text)


def _generation_config(model, tokenizer, s: GenerationSettings):
    config = copy.deepcopy(model.generation_config)
    sample = s.temperature > 0
    config.do_sample = sample
    config.temperature = s.temperature if sample else None
    config.top_p = s.top_p if sample else None
    config.top_k = s.top_k if sample and s.top_k > 0 else None
    config.num_beams = s.num_beams
    config.max_new_tokens = s.max_new_tokens
    config.length_penalty = s.length_penalty
    config.no_repeat_ngram_size = s.no_repeat_ngram_size or None
    config.pad_token_id = tokenizer.pad_token_id
    config.stop_strings = s.stop or None
    return config


def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """The text each token adds to the decoded sequence, for showing a tokenization.

    Decoding tokens one by one shows U+FFFD for every character a byte-level tokenizer splits
    across tokens (emoji, Hebrew, Arabic, CJK). Here the sequence is decoded incrementally, as in
    streaming: a character appears whole at the token that completes it, the tokens before it
    add "". A sequence cut inside a character (by --max-seq-length) shows what its bytes decode to.
    """
    pieces: list[str] = []
    prefix = read = 0  # decode from ``prefix`` (context for tokenizers that strip leading spaces); ``read``: shown so far
    for end in range(1, len(ids) + 1):
        before = tokenizer.decode(ids[prefix:read])
        text = tokenizer.decode(ids[prefix:end])
        if len(text) > len(before) and not text.endswith("\ufffd") and text.startswith(before):
            pieces.append(text[len(before) :])
            prefix, read = read, end
        else:
            pieces.append("")
    if read < len(ids):
        pieces[-1] = tokenizer.decode(ids[read:])
    return pieces


def _cut_at_stop(text: str, stops: list[str]) -> str:
    cuts = [text.find(s) for s in stops if s and s in text]
    return text[: min(cuts)] if cuts else text


def check_context(
    model, tokenizer, texts: list[str], settings: GenerationSettings, *, add_special: bool, where: list[str]
) -> None:
    """Refuse (UsageError) a prompt whose tokens plus ``--max-new-tokens`` exceed the model's context.

    A model fed more positions than it has fails inside torch (GPT-2: IndexError) or degrades
    silently, so no prompt is cut behind the user's back: the error names the prompt (``where``,
    e.g. ``rows.jsonl:7``) and says to shorten it or lower --max-new-tokens. A model whose config
    declares no context length is not limited. An empty prompt (no tokens) is refused too.
    """
    context = context_length(model)
    for label, text in zip(where, texts):
        n = len(tokenizer(text, add_special_tokens=add_special)["input_ids"])
        if n == 0:  # transformers would fail deep inside generate with a long RuntimeError
            raise UsageError(f"{label}: the prompt is empty (no tokens); give it some text")
        if context is None or n + settings.max_new_tokens <= context:
            continue
        if n >= context:
            raise UsageError(f"{label}: {n} prompt tokens, more than the model's context of {context} tokens; shorten the prompt")
        raise UsageError(
            f"{label}: {n} prompt tokens + {param('max_new_tokens')} {settings.max_new_tokens} = "
            f"{n + settings.max_new_tokens}, more than the model's context of {context} tokens; "
            f"shorten the prompt or lower {param('max_new_tokens')} to {context - n} or less"
        )


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str | list[dict]],
    settings: GenerationSettings,
    *,
    chat: bool,
    batch_size: int = 8,
    on_text: Callable[[str], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    where: list[str] | None = None,
) -> list[str]:
    """Generate a completion for each prompt, in batches with left padding.

    ``on_text`` streams the text of a single prompt as it is produced; ``on_batch(n)`` reports
    progress after each batch of ``n`` prompts. Before anything is generated, every prompt is
    checked against the model's context (:func:`check_context`); ``where`` names each prompt in
    that error (default ``prompt #n``).
    """
    settings.validate()
    model.eval()
    device = next(model.parameters()).device
    config = _generation_config(model, tokenizer, settings)
    labels = where if where is not None else [f"prompt #{n}" for n in range(1, len(prompts) + 1)]
    check_chat_template(tokenizer, prompts, chat, labels)
    texts = [build_prompt(tokenizer, p, chat, label) for p, label in zip(prompts, labels)]
    add_special = not (chat or any(isinstance(p, list) for p in prompts))
    check_context(model, tokenizer, texts, settings, add_special=add_special, where=labels)
    outputs: list[str] = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=add_special).to(device)
            streamer = _CallbackStreamer(tokenizer, on_text) if on_text and len(texts) == 1 else None
            torch.manual_seed(settings.seed)
            generated = model.generate(**enc, generation_config=config, tokenizer=tokenizer, streamer=streamer)
            new_tokens = generated[:, enc["input_ids"].shape[1] :]
            for row in tokenizer.batch_decode(new_tokens, skip_special_tokens=True):
                outputs.append(_cut_at_stop(row, settings.stop))
            if on_batch:
                on_batch(len(chunk))
    finally:
        tokenizer.padding_side = side
    return outputs
