"""Validation under ``--parallel fsdp``: every process runs the same forwards, and one loss comes of them.

FSDP gathers each block's weights from every process as a forward reaches it, so a process that
skipped a forward would leave the others waiting. Validation therefore gives every process the
same number of batches (:func:`even_batches`); a process whose share of a batch is empty runs a
stand-in that counts nothing. The losses are summed over the processes, weighted by trained tokens.
"""

from __future__ import annotations

from ..data.row_encoding import loss_tokens
from .distributed import DistContext
from .sampler import rank_share


def even_batches(examples: list, batch_size: int, ctx: DistContext) -> list[list]:
    """This process's validation batches when every process must run as many forwards as the others.

    Each global batch of ``batch_size x N`` examples is split as training splits one (:func:`rank_share`), so
    every process gets the same number of batches; an empty share is ``[]`` (run a stand-in, count nothing).
    """
    size = batch_size * ctx.world_size
    return [rank_share(examples[i : i + size], ctx.rank, batch_size) for i in range(0, len(examples), size)]


def sharded_valid_loss(on_model, examples: list, batch_size: int, pad_id: int, device, ctx: DistContext) -> float:
    """Token-weighted mean validation loss over ``examples`` shared out over the processes, each running the
    same forwards (:func:`even_batches`); the same number as one process scoring them all."""
    from ..engine.loss import evaluate_loss

    total = count = 0.0
    for share in even_batches(examples, batch_size, ctx):
        loss = on_model(evaluate_loss, share or examples[:1], batch_size, pad_id, device)
        tokens = sum(loss_tokens(e.labels) for e in share)  # 0 for a stand-in
        total, count = total + loss * tokens, count + tokens
    total, count = ctx.sum([total, count], device)
    return total / max(1.0, count)
