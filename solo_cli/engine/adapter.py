"""The Solo adapter: low-rank long skip connections between decoder blocks, and attaching them.

A connection ``i -> j`` changes the output of block ``j`` to ``block_j(h_{j-1}) + t * B A n(h_i)``,
where ``n`` is the source normalisation (``rms``: each position's h_i divided by its RMS, because
residual streams grow with depth and carry a few "massive" dimensions of 10^4 on the first token;
``none``: h_i as it is, as solo 0.1 trained every adapter). The connection and the block hooks are
:mod:`solo_cli.engine.modeling_solo` (the file every export carries); this module adds the adapter
around them and the rule of one adapter per model.
All trainable tensors live in one container module, :class:`SoloAdapter`, so the adapter's
state is ``adapter.state_dict()``; the base model is never modified, only hooked.
"""

from __future__ import annotations

import contextlib
import math
import weakref

from torch import nn

from .adapter_config import GATE_MODES, SOURCE_NORMS, TRAINABLE_GATES, AdapterConfig, connection_key  # noqa: F401 (re-exported)
from .blocks import find_blocks
from .modeling_solo import SoloConnection, SoloHooks


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
        """In ``schedule`` mode, set the gate for optimizer step ``step`` (0 the first): t = min(1, (step + 1) / homotopy_steps).

        The ramp starts above 0 on purpose. A freshly attached adapter (t = 0, before any step) is
        exactly the base model, a tested contract; but a step taken at t = 0 would give A and B no
        gradient at all (the delta is multiplied by t), wasting the first update, which under
        ``--warmup 0`` is taken at the peak learning rate. So step s trains at t = (s + 1) / H:
        the first update moves A and B, and t reaches 1 at step H - 1, the H-th update.
        """
        if self.config.gate != "schedule":
            return
        steps = max(1, self.config.homotopy_steps)
        value = min(1.0, (step + 1) / steps)
        for conn in self.connections.values():
            conn.set_gate(value)

    def gate_values(self) -> dict[str, float]:
        return {key: conn.gate_value() for key, conn in self.connections.items()}

    def num_parameters(self) -> int:
        """Parameters the adapter trains (a scheduled gate is a buffer, not a parameter)."""
        return sum(p.numel() for p in self.parameters())


# model -> its AttachedAdapter: one adapter per model (stacking is refused, not composed)
_ATTACHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class AttachedAdapter:
    """A :class:`SoloAdapter` running inside a model, through the hooks of :class:`.modeling_solo.SoloHooks`
    (what they keep and when they drop it is said there). ``detach()`` removes them.

    ``with handle.disabled():`` runs the plain base model, as peft's ``disable_adapter()``;
    ``handle.scale = x`` scales every connection (0: the base exactly, 1: as trained).
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
        _, blocks = find_blocks(model)
        self._hooks = SoloHooks(model, blocks, adapter.items())
        _ATTACHED[model] = self

    @property
    def enabled(self) -> bool:
        return self._hooks.enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        self._hooks.enabled = value

    @property
    def scale(self) -> float:
        """What every connection's output is multiplied by: 1 as trained, 0 the base model exactly."""
        return self._hooks.scale

    @scale.setter
    def scale(self, value: float) -> None:
        value = float(value)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"scale must be a finite number >= 0 (0 = the base model, 1 = as trained), got {value:g}")
        self._hooks.scale = value

    @contextlib.contextmanager
    def disabled(self):
        """Run the base model alone inside the block; the adapter is back afterwards."""
        previous, self.enabled = self.enabled, False
        try:
            yield self.model
        finally:
            self.enabled = previous

    def release_sources(self) -> None:
        """Drop the stored source hidden states (after a backward pass; see :func:`release_sources`)."""
        self._hooks.sources.clear()

    @property
    def stored_sources(self) -> int:
        """How many source hidden states the hooks hold now."""
        return len(self._hooks.sources)

    def detach(self) -> None:
        self._hooks.remove()
        if _ATTACHED.get(self.model) is self:
            del _ATTACHED[self.model]


def release_sources(model: nn.Module) -> None:
    """Drop the hidden states the hooks of ``model``'s adapter keep for a backward pass; call it once the backward is done.

    Training's loss may run the model's body without the model's own forward (engine/loss.py), and
    a step's sources would otherwise stay alive through the optimizer step until the next forward.
    """
    handle = _ATTACHED.get(model)
    if handle is not None:
        handle.release_sources()


def attach(model: nn.Module, adapter: SoloAdapter) -> AttachedAdapter:
    """Hook ``adapter`` into ``model`` and return the handle. Moves the adapter to the model's device.

    Raises ValueError if the model already carries an adapter (detach that one first).
    """
    handle = AttachedAdapter(model, adapter)
    adapter.to(next(model.parameters()).device)
    return handle
