"""Which examples each optimizer step trains on: a resumable, rank-split stream of optimizer steps.

The stream is organised by optimizer step, so that ``--grad-accum`` is exactly a bigger batch:
each epoch's order is cut into steps of ``batch x processes x grad_accum`` examples, and each
step into its micro-batches of ``batch x processes``. An epoch's last step may be short (fewer
examples, fewer micro-batches); no step ever takes examples from the next epoch. An epoch has
``ceil(examples / (batch x processes x grad_accum))`` steps.

The order is a pure function of the seed and the position in the stream (in optimizer steps),
so a resumed run (or any number of processes) sees exactly the batches one uninterrupted
process would.

Length grouping (``--group-by-length``, the default) keeps padding small: each epoch's shuffled
order is cut into windows of :data:`WINDOW_BATCHES` global batches, each window is sorted by
length and cut into batches, and the batches are shuffled, as HF's ``group_by_length``
(megabatches of 50) and mlx-lm (sorted batches) do. Batches are then near-uniform in length
while which examples meet in a batch, and the order of batches, still change every epoch.

Packing (``--packing``) makes the unit a row instead of an example: each epoch's shuffled order
is packed into rows of at most ``--max-seq-length`` tokens (:func:`solo_cli.data.packing.pack`),
the rows are shuffled, and steps and micro-batches are cut from rows as they are from examples
(``batch`` rows a micro-batch, so a token budget of ``batch x max_seq_length``). Every epoch
packs into the same number of rows, so steps per epoch are known before the run.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import TypeVar

from ..data.packing import PackedRow, pack, row_count
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


def _micro_batches_of(steps: list[list], global_batch: int) -> list[list[list]]:
    """Each step cut into its global micro-batches of ``global_batch`` (the last of a short step may be shorter)."""
    return [[step[i : i + global_batch] for i in range(0, len(step), global_batch)] for step in steps]


def epoch_steps(
    examples: Sequence, global_batch: int, seed: int, epoch: int, lengths: Sequence[int] | None = None, accum: int = 1
) -> list[list[list[int]]]:
    """The optimizer steps of one epoch in training order, each a list of global micro-batches of example indices.

    The epoch's order (:func:`epoch_order`, length-grouped in units of a step with ``lengths``; see
    the module's docstring) is cut into steps of ``global_batch x accum`` examples, each step into
    micro-batches of ``global_batch``. Every rank computes the same list and takes its slice of
    each micro-batch; how examples are grouped into steps and batches is decided here and nowhere else.
    """
    order = epoch_order(len(examples), seed, epoch)
    size = global_batch * accum
    if lengths is None or not order:
        steps = [order[i : i + size] for i in range(0, len(order), size)]
    else:
        steps = _grouped(order, lengths, size, seed, epoch)
    return _micro_batches_of(steps, global_batch)


def example_lengths(examples: Sequence) -> list[int]:
    """The token length of every example, the key :func:`epoch_steps` groups by.

    An Arrow-backed view reads them from its column (``lengths()``) instead of building every example.
    """
    if hasattr(examples, "lengths"):
        return examples.lengths()
    return [len(e.input_ids) for e in examples]


def steps_per_epoch(num_examples: int, global_batch: int, accum: int = 1) -> int:
    """Optimizer steps in one pass over ``num_examples``: steps of ``global_batch x accum`` examples, the last maybe short."""
    return max(1, math.ceil(num_examples / (global_batch * accum)))


def step_batches(
    examples: Sequence[T],
    global_batch: int,
    seed: int,
    start: int = 0,
    lengths: Sequence[int] | None = None,
    accum: int = 1,
) -> Iterator[list[list[T]]]:
    """Endless stream of optimizer steps, reshuffled each epoch, starting at step ``start``; each a list of global
    micro-batches of ``global_batch`` examples (``batch x processes``: exactly what one process with that batch
    would take), of which each process trains its :func:`rank_share`. ``lengths`` turns on length grouping.
    """
    per_epoch = steps_per_epoch(len(examples), global_batch, accum)
    for step in _stream(per_epoch, lambda epoch: epoch_steps(examples, global_batch, seed, epoch, lengths, accum), start):
        yield [[examples[i] for i in batch] for batch in step]


def rank_share(batch: Sequence[T], rank: int, batch_size: int) -> Sequence[T]:
    """Process ``rank``'s slice of a global micro-batch: its ``batch_size`` items, empty when an epoch's last, short
    batch has nothing left for it."""
    return batch[rank * batch_size : (rank + 1) * batch_size]


def _stream(per_epoch: int, plan, start: int) -> Iterator[list]:
    """Endless optimizer steps from step ``start``; ``plan(epoch)`` gives an epoch's ``per_epoch`` steps."""
    index, epoch, steps = start, None, []
    while True:
        this_epoch, within = divmod(index, per_epoch)
        if this_epoch != epoch:
            epoch, steps = this_epoch, plan(this_epoch)
        yield steps[within]
        index += 1


def packed_epoch_steps(
    lengths: Sequence[int], capacity: int, global_batch: int, seed: int, epoch: int, accum: int = 1
) -> list[list[list[list[int]]]]:
    """The optimizer steps of one epoch with packing: lists of global micro-batches of rows of example indices.

    A pure function of the seed and the epoch (as :func:`epoch_steps`): :func:`epoch_order` packed
    into rows of at most ``capacity`` tokens, the rows shuffled on their own stream with the fullest
    first (a micro-batch that does not fit in memory fails at the first step), then cut into steps
    of ``global_batch x accum`` rows and micro-batches of ``global_batch`` rows.
    """
    rows = pack(epoch_order(len(lengths), seed, epoch), lengths, capacity)
    random.Random((seed * 1_000_003 + epoch) * 7 + 2).shuffle(rows)
    if rows:
        fullest = max(range(len(rows)), key=lambda r: sum(lengths[i] for i in rows[r]))
        rows[0], rows[fullest] = rows[fullest], rows[0]
    size = global_batch * accum
    return _micro_batches_of([rows[i : i + size] for i in range(0, len(rows), size)], global_batch)


def packed_step_batches(
    examples: Sequence, global_batch: int, seed: int, capacity: int, start: int = 0, accum: int = 1
) -> Iterator[list[list[PackedRow]]]:
    """Endless stream of optimizer steps with packing from step ``start``: each a list of global micro-batches of
    :class:`PackedRow`; each process trains its ``batch`` rows of every micro-batch, as it does examples unpacked."""
    lengths = example_lengths(examples)
    per_epoch = steps_per_epoch(row_count(lengths, capacity), global_batch, accum)
    for step in _stream(per_epoch, lambda epoch: packed_epoch_steps(lengths, capacity, global_batch, seed, epoch, accum), start):
        yield [[PackedRow.of([examples[i] for i in row]) for row in batch] for batch in step]


def epoch_units(cfg: TrainConfig, examples: Sequence) -> int:
    """What an epoch's steps are cut from: its examples, or with ``--packing`` the rows they pack into."""
    if not cfg.packing:
        return len(examples)
    return row_count(example_lengths(examples), cfg.max_seq_length)


def total_steps(cfg: TrainConfig, num_examples: int, world_size: int = 1) -> int:
    """``--max-steps`` if given, else the optimizer steps in ``--epochs`` passes over the data
    (``num_examples``: with ``--packing``, the rows of :func:`epoch_units`)."""
    if cfg.max_steps:
        return cfg.max_steps
    per_epoch = steps_per_epoch(num_examples, cfg.batch_size * world_size, cfg.grad_accum)
    return max(1, math.ceil(cfg.epochs * per_epoch - 1e-9))
