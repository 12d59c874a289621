"""Packing: several examples in one row, without padding between them (``--packing``).

Examples are packed into rows of at most ``capacity`` tokens by best-fit decreasing: longest
first, each into the row with the least room that still fits it. A packed row gives each of its
examples ``position_ids`` that restart at 0, which is all transformers needs to keep them apart:
with ``position_ids`` and no ``attention_mask``, its sdpa, eager and flex masks allow attention
only within a run of consecutive positions (``masking_utils.find_packed_sequence_indices``), and
flash-attention takes the same ``position_ids`` of a single flattened row as varlen boundaries.
Whether a model honours them is proven, not assumed (:func:`solo_cli.engine.loss.prove_packing`).

The first label of every example is set to -100 in the row: the previous example's last token must
not be trained to predict it, and unpacked, no position predicts it either. So
:func:`~solo_cli.data.row_encoding.loss_tokens` of a row is the sum over its examples, and every count of
trained tokens stays the same with or without packing.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .row_encoding import Example


@dataclass
class PackedRow:
    """Examples laid end to end: their tokens, their labels (each example's first one -100) and their lengths."""

    input_ids: list[int]
    labels: list[int]
    lengths: list[int]

    @classmethod
    def of(cls, examples: Sequence[Example | PackedRow]) -> PackedRow:
        """The row of ``examples`` (or of rows, flattened into one) in the order given."""
        ids, labels, lengths = [], [], []
        for e in examples:
            ids += e.input_ids
            if isinstance(e, PackedRow):
                labels += e.labels
                lengths += e.lengths
            else:
                labels += [-100, *e.labels[1:]] if e.labels else []
                lengths.append(len(e.input_ids))
        return cls(ids, labels, lengths)


def pack(order: Sequence[int], lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Rows of the example indices in ``order``, each holding at most ``capacity`` tokens (best-fit decreasing).

    Deterministic: ties in length keep their order in ``order``. How many rows it makes depends only
    on the lengths, never on ``order`` (see :func:`row_count`). Raises ``ValueError`` for an example
    longer than ``capacity``.
    """
    ranked = sorted(order, key=lambda i: -lengths[i])  # stable
    smallest = lengths[ranked[-1]] if ranked else 0
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (tokens left, row), sorted; a row leaves once no example fits in it
    for i in ranked:
        size = lengths[i]
        if size > capacity:
            raise ValueError(f"example {i} has {size} tokens, more than a row's {capacity}")
        k = bisect_left(room, (size, -1))  # the row with the least room that fits it
        if k == len(room):
            rows.append([i])
            left, row = capacity - size, len(rows) - 1
        else:
            left, row = room.pop(k)
            rows[row].append(i)
            left -= size
        if left >= smallest:
            insort(room, (left, row))
    return rows


def row_count(lengths: Sequence[int], capacity: int) -> int:
    """How many rows :func:`pack` makes of examples of these lengths, in any order.

    Best-fit decreasing sees only the lengths in sorted order; examples of equal length are
    interchangeable in it, so the shuffle of an epoch changes which examples share a row, never how
    many rows there are. Every epoch has the same number of steps.
    """
    return len(pack(range(len(lengths)), lengths, capacity))


def collate_packed(rows: Sequence[PackedRow], pad_id: int, *, flat: bool = False) -> dict[str, torch.Tensor]:
    """A batch of packed rows: ``input_ids``, ``labels``, ``position_ids`` and ``loss_positions``, no ``attention_mask``.

    Rows are right-padded to the longest; the padding is one more run of positions from 0, so it is
    a sequence of its own that no example attends to, and it carries no loss. ``flat`` lays every
    row end to end in a single row, as flash-attention's varlen kernels take them (no padding at all).
    ``loss_positions`` are as in :func:`solo_cli.data.row_encoding.collate`.
    """
    rows = [PackedRow.of(rows)] if flat else list(rows)
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    positions = torch.empty((len(rows), width), dtype=torch.long)
    for n, r in enumerate(rows):
        ids[n, : len(r.input_ids)] = torch.tensor(r.input_ids, dtype=torch.long)
        labels[n, : len(r.labels)] = torch.tensor(r.labels, dtype=torch.long)
        runs = [*r.lengths, width - len(r.input_ids)]
        positions[n] = torch.cat([torch.arange(k) for k in runs])
    loss_positions = (labels[:, 1:] != -100).reshape(-1).nonzero().squeeze(1)
    return {"input_ids": ids, "labels": labels, "position_ids": positions, "loss_positions": loss_positions}
