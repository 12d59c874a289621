"""Which examples each optimizer step trains on: a resumable, rank-split stream of micro-batches.

The order is a pure function of the seed and the position in the stream, so a resumed run (or
any number of processes) sees exactly the batches one uninterrupted process would.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import TypeVar

from .config import TrainConfig

T = TypeVar("T")


def epoch_order(num_examples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of one epoch: a pure function of seed and epoch, so resumable."""
    order = list(range(num_examples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def epoch_batches(examples: Sequence, global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The global batches of one epoch, as example indices, in the order they are trained.

    Every rank computes the same list and takes its slice of each batch; how examples are grouped
    into batches is decided here and nowhere else.
    """
    order = epoch_order(len(examples), seed, epoch)
    return [order[i : i + global_batch] for i in range(0, len(order), global_batch)]


def micro_batches(
    examples: Sequence[T], batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1
) -> Iterator[list[T]]:
    """Endless stream of micro-batches, reshuffled each epoch, starting at micro-batch ``start``.

    With ``world_size`` processes, micro-batch m of the global stream (``batch_size x world_size``
    examples, exactly what one process with that batch would take) is split, and this rank gets
    its ``batch_size`` slice (empty when an epoch's last, short batch has nothing left for it).
    """
    global_batch = batch_size * world_size
    per_epoch = math.ceil(len(examples) / global_batch)
    index, epoch, batches = start, None, []
    while True:
        this_epoch, within = divmod(index, per_epoch)
        if this_epoch != epoch:
            epoch, batches = this_epoch, epoch_batches(examples, global_batch, seed, this_epoch)
        chunk = batches[within][rank * batch_size : (rank + 1) * batch_size]
        yield [examples[i] for i in chunk]
        index += 1


def total_steps(cfg: TrainConfig, num_examples: int, world_size: int = 1) -> int:
    """``--max-steps`` if given, else the optimizer steps in ``--epochs`` passes over the data."""
    if cfg.max_steps:
        return cfg.max_steps
    micro_per_epoch = math.ceil(num_examples / (cfg.batch_size * world_size))
    return max(1, math.ceil(cfg.epochs * micro_per_epoch / cfg.grad_accum))
