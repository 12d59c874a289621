"""The key/value cache of the rows that decode together, as a transformers ``Cache``.

Row ``b``'s tokens sit at columns ``0 .. length_b - 1`` of every layer's buffer (right padding),
and a decode step writes each row's new key and value at its own column ``length_b``. So a request
joins by copying its prefilled cache into a free row, and leaves by moving the last row into its
place: one row is copied, never the whole batch. (Left padding, what ``generate`` uses, would need
every row shifted whenever a longer prompt joins.) The buffers grow by doubling their columns and
are dropped when the batch empties.

The attention sees ``max(length) + 1`` columns; the scheduler's 2-D attention mask hides each
row's padding, and the positions of its tokens come from ``position_ids``, not from the columns.
Layers whose keys depend on the column (sliding windows narrower than the context) are not
supported: :func:`check_model` refuses them.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from ..errors import UsageError

_FIRST_COLUMNS = 64


class _RowsLayer(DynamicLayer):
    """One layer's buffers (rows, heads, columns, head_dim); ``update`` writes row ``b`` at column ``length_b``."""

    def __init__(self, owner: RowCache) -> None:
        super().__init__()
        self.owner = owner
        self.kbuf: torch.Tensor | None = None
        self.vbuf: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        o = self.owner
        rows, columns = o.row_index, o.positions
        self.kbuf[rows, :, columns] = key_states[:, :, 0].to(self.kbuf.dtype)
        self.vbuf[rows, :, columns] = value_states[:, :, 0].to(self.vbuf.dtype)
        self.keys = self.kbuf[: o.rows, :, : o.width]
        self.values = self.vbuf[: o.rows, :, : o.width]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.owner.width - 1  # the query sits after every column the step reads

    def allocate(self, rows: int, sample: torch.Tensor, columns: int) -> None:
        shape = (rows, sample.shape[1], columns, sample.shape[3])
        # zeros, not empty: a masked column's value is multiplied by an attention weight of exactly 0,
        # and 0 * NaN (what uninitialised memory may hold) would be NaN
        self.kbuf = torch.zeros(shape, dtype=sample.dtype, device=sample.device)
        self.vbuf = torch.zeros(shape, dtype=sample.dtype, device=sample.device)
        self.is_initialized = True

    def grow(self, rows: int, columns: int) -> None:
        for name in ("kbuf", "vbuf"):
            old = getattr(self, name)
            new = old.new_zeros((rows, old.shape[1], columns, old.shape[3]))
            new[: old.shape[0], :, : old.shape[2]] = old
            setattr(self, name, new)


class RowCache(Cache):
    """The batch's cache: ``insert`` a prefilled row, ``move`` a row, ``step`` before each decode forward."""

    def __init__(self, max_rows: int, max_columns: int) -> None:
        super().__init__(layers=[])
        self.max_rows, self.max_columns = max_rows, max_columns
        self.rows = 0  # rows the next step reads
        self.width = 1  # columns the next step reads (the longest row + its new token)
        self.row_index = torch.arange(0)
        self.positions = torch.zeros(0, dtype=torch.long)
        self.capacity = self.columns = 0  # rows and columns the buffers hold

    def insert(self, row: int, prefill: DynamicCache, length: int) -> None:
        """Copy a request's prefilled cache (batch 1, ``length`` tokens, no padding) into ``row``."""
        if not self.layers:
            self.layers = [_RowsLayer(self) for _ in prefill.layers]
            self.capacity, self.columns = 1, max(_FIRST_COLUMNS, length)
            for layer, source in zip(self.layers, prefill.layers):
                layer.allocate(self.capacity, source.keys, self.columns)
        self.reserve(length, rows=row + 1)
        for layer, source in zip(self.layers, prefill.layers):
            layer.kbuf[row, :, :length] = source.keys[0, :, :length]
            layer.vbuf[row, :, :length] = source.values[0, :, :length]

    def move(self, source: int, target: int, length: int) -> None:
        """Copy row ``source``'s first ``length`` columns into row ``target`` (a leaving row's place)."""
        for layer in self.layers:
            layer.kbuf[target, :, :length] = layer.kbuf[source, :, :length]
            layer.vbuf[target, :, :length] = layer.vbuf[source, :, :length]

    def reserve(self, columns: int, rows: int = 0) -> None:
        """Make every buffer at least ``columns`` wide and ``rows`` high (doubling, up to the context and the batch)."""
        if columns <= self.columns and rows <= self.capacity:
            return
        if columns > self.columns:
            self.columns = min(max(columns, 2 * self.columns), max(self.max_columns, columns))
        if rows > self.capacity:
            self.capacity = min(max(rows, 2 * self.capacity), max(self.max_rows, rows))
        for layer in self.layers:
            layer.grow(self.capacity, self.columns)

    def step(self, lengths: torch.Tensor, longest: int) -> None:
        """Before a decode forward over ``len(lengths)`` rows: row ``b`` writes its new token at column ``lengths[b]``;
        ``longest`` is ``max(lengths)``, which the caller knows without reading the device."""
        self.rows = lengths.shape[0]
        self.width = longest + 1
        self.reserve(self.width)
        self.row_index = torch.arange(self.rows, device=lengths.device)
        self.positions = lengths

    def clear(self) -> None:
        """Drop the buffers (the batch is empty); the next ``insert`` allocates them again."""
        self.layers = []
        self.capacity = self.columns = 0


def check_model(model) -> None:
    """Refuse (UsageError) a model whose cache the row cache cannot hold: non-attention layers, narrow sliding windows."""
    from ..data.row_encoding import context_length

    config = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    kinds = set(getattr(config, "layer_types", None) or [])
    unsupported = kinds - {"full_attention", "sliding_attention"}
    if unsupported:
        raise UsageError(
            f"solo serve batches attention caches only; {type(model).__name__} has {', '.join(sorted(unsupported))} layers"
        )
    window = getattr(config, "sliding_window", None)
    context = context_length(model)
    if isinstance(window, int) and context is not None and window < context:
        raise UsageError(
            f"solo serve cannot batch {type(model).__name__}: its sliding window ({window}) is narrower than its "
            f"context ({context})"
        )
