"""The shape of an adapter, without torch: its config, gate modes and the tensors a file of it holds.

Reading an adapter's header (``solo inspect``) needs only this; the module that builds the
adapter (:mod:`solo_cli.engine.adapter`) imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UsageError, param
from .topology import Connection, source_name

GATE_MODES = ("learned", "schedule", "zero-init")
# "learned" is only read (adapters of solo 0.1): a trainable scalar multiplying B A stayed near 0
# on a full E2E epoch (mean -0.03) and throttled every update of A and B; see bench/results/e2e-proxy.md.
TRAINABLE_GATES = ("schedule", "zero-init")
SOURCE_NORMS = ("rms", "none")


def max_rank(hidden_size: int) -> int:
    """The largest rank of a connection on a model of ``hidden_size``: A is rank x hidden, so a larger rank adds
    nothing. The one bound: the adapter reader (adapter_header) refuses more, and no adapter is built with more."""
    return hidden_size


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

    def __post_init__(self) -> None:
        # before any tensor is allocated: --rank 1000000000 would ask for terabytes, --rank 33 on a hidden size
        # of 32 would train an adapter that solo then refuses to read (hidden_size 0: not known, not checked)
        if self.hidden_size > 0 and not 1 <= self.rank <= max_rank(self.hidden_size):
            raise UsageError(
                f"{param('rank')} {self.rank}: must be between 1 and {max_rank(self.hidden_size)}, the model's hidden "
                f"size (a connection's A is rank x hidden size); lower {param('rank')}"
            )

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
    return f"{source_name(src)}_{dst}"


def tensor_shapes(config: AdapterConfig) -> dict[str, tuple[int, ...]]:
    """Name and shape of every tensor of an adapter with ``config``: exactly ``SoloAdapter(config).state_dict()``.

    ``A`` is rank x hidden, ``B`` hidden x rank, and the gated modes add a scalar ``gate``.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    for src, dst in config.connections:
        prefix = f"connections.{connection_key(src, dst)}"
        shapes[f"{prefix}.A"] = (config.rank, config.hidden_size)
        shapes[f"{prefix}.B"] = (config.hidden_size, config.rank)
        if config.gate != "zero-init":
            shapes[f"{prefix}.gate"] = ()
    return shapes
