"""The architecture fingerprint an adapter records, so that it can refuse a base model it was not trained on.

Torch-free: an adapter's header is read and checked without loading torch. It is measured from a
loaded model by :func:`solo_cli.engine.blocks.arch_fingerprint`. It names the architecture's
shape only; which weights a base holds is :mod:`solo_cli.engine.weights_digest`'s concern.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ArchFingerprint:
    """What an adapter needs to know to refuse a base model it was not trained on: the architecture's shape."""

    model_type: str
    num_blocks: int
    hidden_size: int
    vocab_size: int

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.model_type}, {self.num_blocks} blocks, d={self.hidden_size}, vocab={self.vocab_size}"


Fingerprint = ArchFingerprint  # the name before solo 0.3, kept for code that imports it
