"""Which examples each optimizer step trains on: a resumable, rank-split stream of micro-batches.

The order is a pure function of the seed and the position in the stream, so a resumed run (or
any number of processes) sees exactly the batches one uninterrupted process would.

Length grouping (``--group-by-length``, the default) keeps padding small: each epoch's shuffled
order is cut into windows of :data:`WINDOW_BATCHES` global batches, each window is sorted by
length and cut into batches, and the batches are shuffled, as HF's ``group_by_length``
(megabatches of 50) and mlx-lm (sorted batches) do. Batches are then near-uniform in length
while which examples meet in a batch, and the order of batches, still change every epoch.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import TypeVar

from .config import TrainConfig

T = TypeVar("T")

# Global batches per sorted window: wide enough that neighbours in a window are close in length,
# narrow enough that a window is still a random sample of the data.
WINDOW_BATCHES = 64


def epoch_order(num_examples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled example order of one epoch: a pure function of seed and epoch, so resumable."""
    order = list(range(num_examples))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def _grouped(order: list[int], lengths: Sequence[int], global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """``order`` sorted by length within windows, cut into batches, the full batches shuffled.

    The widest full batch comes first, so a batch that does not fit in memory fails at the first
    step rather than hours in (as HF's sampler does); a short last batch stays last, as without
    grouping, so the epoch's batch count and its uneven tail are the same either way.
    """
    window = global_batch * WINDOW_BATCHES
    batches = []
    for start in range(0, len(order), window):
        ranked = sorted(order[start : start + window], key=lambda i: lengths[i])  # stable: ties keep the shuffle
        batches += [ranked[i : i + global_batch] for i in range(0, len(ranked), global_batch)]
    tail = [batches.pop()] if len(batches[-1]) < global_batch else []
    random.Random((seed * 1_000_003 + epoch) * 7 + 1).shuffle(batches)  # its own stream, not epoch_order's
    if batches:
        widest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches[0], batches[widest] = batches[widest], batches[0]
    return batches + tail


def epoch_batches(
    examples: Sequence, global_batch: int, seed: int, epoch: int, lengths: Sequence[int] | None = None, accum: int = 1
) -> list[list[int]]:
    """The global micro-batches of one epoch, as example indices, in the order they are trained.

    With ``lengths`` (one per example) the batches are length-grouped (see the module's
    docstring) in units of an optimizer step (``accum`` micro-batches), each step's examples
    then cut into its micro-batches, so ``--grad-accum 2`` trains exactly the examples of a
    micro-batch twice its size; without, they are consecutive slices of :func:`epoch_order`.
    Every rank computes the same list and takes its slice of each batch; how examples are
    grouped into batches is decided here and nowhere else.
    """
    order = epoch_order(len(examples), seed, epoch)
    if lengths is None or not order:
        return [order[i : i + global_batch] for i in range(0, len(order), global_batch)]
    steps = _grouped(order, lengths, global_batch * accum, seed, epoch)
    return [step[i : i + global_batch] for step in steps for i in range(0, len(step), global_batch)]


def example_lengths(examples: Sequence) -> list[int]:
    """The token length of every example, the key :func:`epoch_batches` groups by.

    An Arrow-backed view reads them from its column (``lengths()``) instead of building every example.
    """
    if hasattr(examples, "lengths"):
        return examples.lengths()
    return [len(e.input_ids) for e in examples]


def micro_batches(
    examples: Sequence[T],
    batch_size: int,
    seed: int,
    start: int = 0,
    rank: int = 0,
    world_size: int = 1,
    lengths: Sequence[int] | None = None,
    accum: int = 1,
) -> Iterator[list[T]]:
    """Endless stream of micro-batches, reshuffled each epoch, starting at micro-batch ``start``.

    With ``world_size`` processes, micro-batch m of the global stream (``batch_size x world_size``
    examples, exactly what one process with that batch would take) is split, and this rank gets
    its ``batch_size`` slice (empty when an epoch's last, short batch has nothing left for it).
    ``lengths`` turns on length grouping (:func:`epoch_batches`, by optimizer steps of ``accum``
    micro-batches).
    """
    global_batch = batch_size * world_size
    per_epoch = math.ceil(len(examples) / global_batch)
    index, epoch, batches = start, None, []
    while True:
        this_epoch, within = divmod(index, per_epoch)
        if this_epoch != epoch:
            epoch, batches = this_epoch, epoch_batches(examples, global_batch, seed, this_epoch, lengths, accum)
        chunk = batches[within][rank * batch_size : (rank + 1) * batch_size]
        yield [examples[i] for i in chunk]
        index += 1


def total_steps(cfg: TrainConfig, num_examples: int, world_size: int = 1) -> int:
    """``--max-steps`` if given, else the optimizer steps in ``--epochs`` passes over the data."""
    if cfg.max_steps:
        return cfg.max_steps
    micro_per_epoch = math.ceil(num_examples / (cfg.batch_size * world_size))
    return max(1, math.ceil(cfg.epochs * micro_per_epoch / cfg.grad_accum))
