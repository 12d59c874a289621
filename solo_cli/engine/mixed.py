"""Many adapters in one batch: every row of a forward runs its own adapter's connections, or none.

:class:`.modeling_solo.SoloHooks` runs one adapter over the whole batch. Here the same hooks (the
capture of sources, the add to destination blocks) call a :class:`_RowConnection` for every
connection of the *union* of the loaded adapters. For each connection ``i -> j`` a stack holds every
slot's ``A`` (as ``A^T``, S x d x r) and ``t * B`` (as ``(tB)^T``, S x r x d), zero-padded to the
largest rank and zero where a slot's adapter has no ``i -> j``; slot 0 is the bare base, all zeros.
Zero padding is exact: a zero column of ``A^T`` meets a zero row of ``(tB)^T``.

A forward over rows with slots ``s`` and scales ``c`` adds to row ``b`` of block ``j``'s output
``c_b * (tB)_{s_b} A_{s_b} n_{s_b}(h_i)``: one gather per connection (redone only when the batch's
slots change) and two batched matmuls, whatever the mix of adapters. The math runs in float32, as a
single adapter's connection does. A row of slot 0 or scale 0 gets exactly its base output (the
delta is exactly zero); when every row is such a row the hooks are switched off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .adapter import SoloAdapter
from .blocks import find_blocks
from .modeling_solo import RMS_EPS, SoloHooks

_KEEP_PREPARED = 4  # batch compositions whose gathered stacks are kept (the decode batch and a few prefills)


@dataclass
class _Stack:
    """One connection's per-slot tensors: ``At`` (S, d, r), ``Bt`` (S, r, d), and which slots have the connection."""

    At: torch.Tensor
    Bt: torch.Tensor
    present: list[bool]


@dataclass
class _Rows:
    """What a forward over one composition of rows uses: per-connection gathered stacks and per-row factors."""

    stacks: dict  # (src, dst) -> (At, Bt) gathered for the rows, or None where no row has the connection
    coef: torch.Tensor  # (N, 1, 1): adapter_scale, times sqrt(d) for rows whose adapter normalises its source
    rms: torch.Tensor | None  # (N, 1, 1) bool: rows whose source is rms-normalised; None if no row's is
    active: bool  # False: every row is the bare base, the hooks stay off


class _RowConnection:
    """The callable SoloHooks runs for one connection: ``base + per-row delta``."""

    def __init__(self, owner: MixedAdapters, key: tuple[int, int]) -> None:
        self.owner, self.key = owner, key

    def __call__(self, source: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        return self.owner._add(self.key, source, base)


class MixedAdapters:
    """Adapters in slots over one base model, each row of a forward running the slot :meth:`use` gives it.

    ``add`` puts an adapter in a free slot and returns its index (slot 0 is the bare base);
    ``remove`` empties a slot. Neither may run during a forward; whoever drives the model calls them
    between forwards (the server's decode loop does).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        _, self._blocks = find_blocks(model)
        self.device = next(model.parameters()).device
        self.hidden_size = model.get_input_embeddings().weight.shape[1]
        self._slots: list[SoloAdapter | None] = [None]  # index 0: the bare base, never filled
        self._rank = 1
        self._stacks: dict[tuple[int, int], _Stack] = {}
        self._rms_slots: list[bool] = [False]
        self._hooks: SoloHooks | None = None
        self._prepared: dict[tuple, _Rows] = {}
        self._rows: _Rows | None = None

    @property
    def slots(self) -> int:
        """How many slots exist (the base's included); an index below this is valid for :meth:`use`."""
        return len(self._slots)

    def add(self, adapter: SoloAdapter) -> int:
        """Put ``adapter`` in a free slot (a new one if none is free) and return the slot's index."""
        if adapter.config.hidden_size != self.hidden_size:
            raise ValueError(f"adapter hidden size {adapter.config.hidden_size} != model hidden size {self.hidden_size}")
        free = [i for i, a in enumerate(self._slots) if a is None and i > 0]
        slot = free[0] if free else len(self._slots)
        if slot == len(self._slots):
            self._slots.append(None)
            self._rms_slots.append(False)
        self._slots[slot] = adapter
        self._rms_slots[slot] = adapter.config.source_norm == "rms"
        self._rebuild()
        return slot

    def remove(self, slot: int) -> None:
        """Empty ``slot`` (its rows would run as the bare base); the slot is reused by the next ``add``."""
        if slot <= 0 or slot >= len(self._slots) or self._slots[slot] is None:
            raise ValueError(f"slot {slot} holds no adapter")
        self._slots[slot] = None
        self._rms_slots[slot] = False
        self._rebuild()

    def use(self, slots: list[int], scales: list[float]) -> None:
        """Make the next forwards run row ``b`` with the adapter in ``slots[b]`` scaled by ``scales[b]``."""
        key = (tuple(slots), tuple(scales))
        rows = self._prepared.pop(key, None)  # re-inserted below: the least recently used is dropped first
        if rows is not None:
            self._prepared[key] = rows
        else:
            if len(self._prepared) >= _KEEP_PREPARED:
                self._prepared.pop(next(iter(self._prepared)))
            rows = self._prepared[key] = self._prepare(slots, scales)
        self._rows = rows
        if self._hooks is not None:
            self._hooks.enabled = rows.active

    def close(self) -> None:
        """Take the hooks out of the model: it runs as its base again."""
        if self._hooks is not None:
            self._hooks.remove()
            self._hooks = None

    def _rebuild(self) -> None:
        """Restack every connection of the union of the adapters in the slots, and hook the union in."""
        adapters = [(i, a) for i, a in enumerate(self._slots) if a is not None]
        self._rank = max([a.config.rank for _, a in adapters], default=1)
        keys = sorted({(src, dst) for _, a in adapters for (src, dst), _ in a.items()})
        size, d, r = len(self._slots), self.hidden_size, self._rank
        stacks = {}
        for key in keys:
            At = torch.zeros(size, d, r, dtype=torch.float32, device=self.device)
            Bt = torch.zeros(size, r, d, dtype=torch.float32, device=self.device)
            present = [False] * size
            for slot, adapter in adapters:
                conn = dict(adapter.items()).get(key)
                if conn is None:
                    continue
                rank = conn.A.shape[0]
                At[slot, :, :rank] = conn.A.detach().t().to(self.device, torch.float32)
                Bt[slot, :rank, :] = (conn.B.detach() * conn.gate_value()).t().to(self.device, torch.float32)
                present[slot] = True
            stacks[key] = _Stack(At, Bt, present)
        if self._hooks is None or set(stacks) != set(self._stacks):
            self.close()
            if stacks:
                plan = [(key, _RowConnection(self, key)) for key in keys]
                self._hooks = SoloHooks(self.model, self._blocks, plan)
        self._stacks = stacks
        self._prepared.clear()
        self._rows = None
        if self._hooks is not None:
            self._hooks.enabled = False  # until use() says which rows run what

    def _prepare(self, slots: list[int], scales: list[float]) -> _Rows:
        if any(not 0 <= s < len(self._slots) for s in slots):
            raise ValueError(f"slots {slots}: each must be between 0 and {len(self._slots) - 1}")
        live = [s if (self._slots[s] is not None and c != 0) else 0 for s, c in zip(slots, scales)]
        one_slot = len(set(live)) == 1
        index = None if one_slot else torch.tensor(live, device=self.device)
        stacks = {}
        for key, stack in self._stacks.items():
            if not any(stack.present[s] for s in live):
                stacks[key] = None
            elif one_slot:  # every row the same slot: views, no copy (a prefill, or a batch of one adapter)
                stacks[key] = (stack.At[live[0]].expand(len(live), -1, -1), stack.Bt[live[0]].expand(len(live), -1, -1))
            else:
                stacks[key] = (stack.At.index_select(0, index), stack.Bt.index_select(0, index))
        rms = [self._rms_slots[s] for s in live]
        root = math.sqrt(self.hidden_size)
        coef = torch.tensor([c * (root if n else 1.0) for c, n in zip(scales, rms)], dtype=torch.float32, device=self.device)
        rms_rows = torch.tensor(rms, device=self.device).view(-1, 1, 1) if any(rms) else None
        return _Rows(stacks, coef.view(-1, 1, 1), rms_rows, any(s != 0 for s in live))

    def _add(self, key: tuple[int, int], source: torch.Tensor, base: torch.Tensor | None) -> torch.Tensor:
        """``base + delta`` for one connection, each row with its own slot's tensors (the delta alone if no ``base``)."""
        rows = self._rows
        pair = rows.stacks.get(key) if rows is not None else None
        if pair is None:
            return torch.zeros_like(source, dtype=torch.float32) if base is None else base
        At, Bt = pair
        x = source if source.dtype == torch.float32 else source.float()
        with torch.autocast(x.device.type, enabled=False):  # float32, as a single adapter's connection runs
            u = torch.bmm(x, At)  # (N, L, r)
            scale = rows.coef
            if rows.rms is not None:  # rms rows: A n(x) = sqrt(d) * rsqrt(|x|^2 + d eps) * (A x), per position
                sq = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_() + x.shape[-1] * RMS_EPS
                scale = torch.where(rows.rms, torch.rsqrt(sq), 1.0) * scale
            w = u * scale
            if base is None:
                return torch.bmm(w, Bt)
            if base.dtype == torch.float32:
                return torch.baddbmm(base, w, Bt)
            return base + torch.bmm(w, Bt).to(base.dtype)
