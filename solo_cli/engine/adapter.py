"""The Solo adapter: low-rank long skip connections between decoder blocks, and their hooks.

A connection ``i -> j`` changes the output of block ``j`` to ``block_j(h_{j-1}) + t * B A n(h_i)``,
where ``n`` is the source normalisation (``rms``: each position's h_i divided by its RMS, because
residual streams grow with depth and carry a few "massive" dimensions of 10^4 on the first token;
``none``: h_i as it is, as solo 0.1 trained every adapter).
All trainable tensors live in one container module, :class:`SoloAdapter`, so the adapter's
state is ``adapter.state_dict()``; the base model is never modified, only hooked.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import dataclass, field

import torch
from torch import nn

from .blocks import find_blocks
from .topology import Connection

GATE_MODES = ("learned", "schedule", "zero-init")
# "learned" is only read (adapters of solo 0.1): a trainable scalar multiplying B A stayed near 0
# on a full E2E epoch (mean -0.03) and throttled every update of A and B; see bench/results/e2e-proxy.md.
TRAINABLE_GATES = ("schedule", "zero-init")
SOURCE_NORMS = ("rms", "none")
RMS_EPS = 1e-6


@dataclass
class AdapterConfig:
    """The shape of an adapter: which connections, at what rank, gated how."""

    connections: list[Connection]
    rank: int
    gate: str = "learned"
    homotopy_steps: int = 0  # length of the 0 -> 1 ramp in "schedule" mode
    hidden_size: int = 0
    source_norm: str = "none"  # what files without the field were trained with
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "connections": [list(c) for c in self.connections],
            "rank": self.rank,
            "gate": self.gate,
            "homotopy_steps": self.homotopy_steps,
            "hidden_size": self.hidden_size,
            "source_norm": self.source_norm,
        }


def connection_key(src: int, dst: int) -> str:
    """Module name of a connection: ``"3_9"``, or ``"emb_5"`` for the embedding output."""
    return f"{'emb' if src == -1 else src}_{dst}"


class SoloConnection(nn.Module):
    """One low-rank path ``h_src -> t * B A n(h_src)`` added to the output of the destination block."""

    def __init__(self, hidden_size: int, rank: int, gate: str, source_norm: str = "none") -> None:
        super().__init__()
        self.source_norm = source_norm
        self.A = nn.Parameter(torch.empty(rank, hidden_size))
        self.B = nn.Parameter(torch.empty(hidden_size, rank))
        self.gate_mode = gate
        if gate == "learned":
            self.gate = nn.Parameter(torch.zeros(()))
        elif gate == "schedule":
            self.register_buffer("gate", torch.zeros(()))
        else:
            self.gate = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # A as LoRA initialises it. In the gated modes t = 0 makes the start exact, so B can be
        # random (small, so that t = 1 is a mild perturbation); in zero-init mode B = 0 does it.
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        if self.gate_mode == "zero-init":
            nn.init.zeros_(self.B)
        else:
            nn.init.normal_(self.B, std=0.02)

    def gate_value(self) -> float:
        return 1.0 if self.gate is None else float(self.gate.detach())

    def forward(self, source: torch.Tensor) -> torch.Tensor:
        x = source.to(self.A.dtype)
        if self.source_norm == "rms":
            x = x * torch.rsqrt(x.square().mean(-1, keepdim=True) + RMS_EPS)
        delta = (x @ self.A.t()) @ self.B.t()
        if self.gate is not None:
            delta = delta * self.gate.to(delta.dtype)
        return delta

    def delta_weight(self) -> torch.Tensor:
        """The connection's full linear map ``t * B A`` (d x d)."""
        return self.B @ self.A * (1.0 if self.gate is None else self.gate)


class SoloAdapter(nn.Module):
    """All connections of one adapter. ``state_dict()`` is exactly what the adapter file holds."""

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        if config.gate not in GATE_MODES:
            raise ValueError(f"gate must be one of {GATE_MODES}, got {config.gate!r}")
        if config.source_norm not in SOURCE_NORMS:
            raise ValueError(f"source_norm must be one of {SOURCE_NORMS}, got {config.source_norm!r}")
        self.config = config
        self.connections = nn.ModuleDict(
            {
                connection_key(i, j): SoloConnection(config.hidden_size, config.rank, config.gate, config.source_norm)
                for i, j in config.connections
            }
        )

    def items(self):
        """``((src, dst), connection)`` pairs in plan order."""
        return [((i, j), self.connections[connection_key(i, j)]) for i, j in self.config.connections]

    def set_homotopy_step(self, step: int) -> None:
        """In ``schedule`` mode, set t = min(1, step / homotopy_steps) on every connection."""
        if self.config.gate != "schedule":
            return
        steps = max(1, self.config.homotopy_steps)
        value = min(1.0, step / steps)
        for conn in self.connections.values():
            conn.gate.fill_(value)

    def gate_values(self) -> dict[str, float]:
        return {key: conn.gate_value() for key, conn in self.connections.items()}

    def num_parameters(self) -> int:
        """Parameters the adapter trains (a scheduled gate is a buffer, not a parameter)."""
        return sum(p.numel() for p in self.parameters())


def _hidden_of(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output, hidden):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


# model -> its AttachedAdapter: one adapter per model (stacking is refused, not composed)
_ATTACHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class AttachedAdapter:
    """Forward hooks that run a :class:`SoloAdapter` inside a model. ``detach()`` removes them.

    The hooks only read block outputs and add to them, so KV caching, gradient checkpointing
    (non-reentrant) and any dtype work unchanged: a connection is a per-position linear map.
    Stored sources are dropped when the next forward of the whole model starts (and at the last
    destination when no gradient is recorded), never in between: under activation checkpointing
    that wraps a block's ``__call__`` (transformers before 5.2x), the hooks run again during the
    backward pass and must still find the sources of the forward pass being differentiated.
    ``with handle.disabled():`` runs the plain base model, as peft's ``disable_adapter()``.
    """

    def __init__(self, model: nn.Module, adapter: SoloAdapter) -> None:
        if model in _ATTACHED:
            raise ValueError("this model already carries a solo adapter; detach it first (one adapter per model)")
        if isinstance(getattr(model, "solo", None), nn.ModuleDict):
            raise ValueError(
                "this model already has solo connections built in (an export loaded with trust_remote_code); "
                "load the export without trust_remote_code to attach an adapter natively"
            )
        self.model = model
        self.adapter = adapter
        self.enabled = True
        _, blocks = find_blocks(model)
        self._sources: dict[int, torch.Tensor] = {}
        self._handles = [model.register_forward_pre_hook(self._start_forward)]
        plan = adapter.items()
        sources = {i for (i, _), _ in plan}
        by_dest: dict[int, list] = {}
        for (i, j), conn in plan:
            by_dest.setdefault(j, []).append((i, conn))
        self._last_dest = max(by_dest) if by_dest else -1
        if -1 in sources:
            self._handles.append(blocks[0].register_forward_pre_hook(self._capture_embedding, with_kwargs=True))
        for k in sorted(sources.union(by_dest) - {-1}):
            hook = self._block_hook(k, by_dest.get(k, []), k in sources)
            self._handles.append(blocks[k].register_forward_hook(hook))
        _ATTACHED[model] = self

    def _start_forward(self, module, args):
        self._sources.clear()

    def _capture_embedding(self, module, args, kwargs):
        if self.enabled:
            self._sources[-1] = args[0] if args else kwargs["hidden_states"]

    def _block_hook(self, index: int, incoming: list, is_source: bool):
        def hook(module, args, output):
            if not self.enabled:
                return None
            hidden = _hidden_of(output)
            for src, conn in incoming:
                hidden = hidden + conn(self._sources[src]).to(hidden.dtype)
            if is_source:
                self._sources[index] = hidden
            if index == self._last_dest and not torch.is_grad_enabled():
                self._sources.clear()  # inference: nothing above reads them, and no backward will
            return _replace_hidden(output, hidden) if incoming else None

        return hook

    @contextlib.contextmanager
    def disabled(self):
        """Run the base model alone inside the block; the adapter is back afterwards."""
        previous, self.enabled = self.enabled, False
        try:
            yield self.model
        finally:
            self.enabled = previous

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._sources.clear()
        if _ATTACHED.get(self.model) is self:
            del _ATTACHED[self.model]


def attach(model: nn.Module, adapter: SoloAdapter) -> AttachedAdapter:
    """Hook ``adapter`` into ``model`` and return the handle. Moves the adapter to the model's device.

    Raises ValueError if the model already carries an adapter (detach that one first).
    """
    handle = AttachedAdapter(model, adapter)
    adapter.to(next(model.parameters()).device)
    return handle
