"""What `solo eval` computes with a model: loss and perplexity on the trained tokens, and predictions.

Imports torch (through the encoder, the loss and generation): :mod:`solo_cli.evaluation.evaluate`
imports it only when a model is evaluated.
"""

from __future__ import annotations

import math

from ..data.columns import RowSet
from ..data.pairs import collate_pairs
from ..data.row_encoding import context_length
from ..data.split_encoding import encode_rowset
from ..engine.loss import eval_mode, evaluate_loss
from ..engine.preference import reply_logps
from ..inference.generation import generate
from ..inference.generation_settings import GenerationSettings
from .config import check_max_seq_length
from .eval_set import EvalSet


def loss_and_perplexity(
    model, tokenizer, rows: RowSet, *, chat_template: bool | None, max_seq_length: int, batch_size: int, device
) -> dict | None:
    """Token-weighted loss on the trained tokens (as in training) and its perplexity; None if nothing to score.

    ``rows`` are encoded as training encodes them (:func:`solo_cli.data.split_encoding.encode_rowset`,
    cached), cut to ``min(max_seq_length, the model's context)`` tokens.
    """
    check_max_seq_length(max_seq_length)
    if rows.fmt == "prompt":
        return None
    encoded = encode_rowset(
        rows,
        tokenizer,
        chat_template=chat_template,
        train_on_prompt=False,
        max_len=max_seq_length,
        context=context_length(model),
    )
    if not encoded.examples:
        return None
    loss = evaluate_loss(model, encoded.examples, batch_size, tokenizer.pad_token_id, device)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "loss_tokens": encoded.stats["trained_tokens"]}


def pair_preferences(
    model, tokenizer, rows: RowSet, *, chat_template: bool | None, max_seq_length: int, batch_size: int, device
) -> dict | None:
    """How often ``model`` prefers each pair's chosen reply (``pair_accuracy``: a higher log-probability than the
    rejected one's) and by how much on average (``pair_margin``: chosen minus rejected, in nats); None if no pair fits.

    Pairs are encoded as training encodes them (each reply scored on its own tokens), cut to
    ``min(max_seq_length, the model's context)``. Ties count as not preferred.
    """
    import torch

    check_max_seq_length(max_seq_length)
    encoded = encode_rowset(
        rows, tokenizer, chat_template=chat_template, train_on_prompt=False, max_len=max_seq_length, context=context_length(model)
    )
    pairs = encoded.examples
    if not pairs:
        return None
    margins = []
    with eval_mode(model), torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            batch = collate_pairs(pairs[start : start + batch_size], tokenizer.pad_token_id)
            logps, _ = reply_logps(model, {k: v.to(device) for k, v in batch.items()})
            chosen, rejected = logps.float().cpu().chunk(2)
            margins.append(chosen - rejected)
    margin = torch.cat(margins)
    return {"pairs": len(margin), "pair_accuracy": float((margin > 0).float().mean()), "pair_margin": float(margin.mean())}


def predict(
    model, tokenizer, data: EvalSet, settings: GenerationSettings, *, chat: bool, batch_size: int, on_batch=None
) -> list[str]:
    """Greedy (or beam) predictions for every prompt, batched with left padding.

    A prompt that does not fit the model's context with ``--max-new-tokens`` is refused before
    anything is generated, named by its row (see :func:`solo_cli.generation.check_context`).
    """
    where = data.where[: len(data.prompts)] if len(data.where) >= len(data.prompts) else None
    outputs = generate(model, tokenizer, data.prompts, settings, chat=chat, batch_size=batch_size, on_batch=on_batch, where=where)
    return [p.strip() for p in outputs]
