"""Preference pairs: a prompt with a chosen and a rejected reply, encoded as two examples scored on their replies alone.

A pair row (formats ``preference`` and ``chat-preference``) is rendered as the two rows supervised
training would train: prompt + chosen and prompt + rejected, as ``completion`` rows (or ``chat``
rows when the prompt is a conversation), through the one :func:`solo_cli.data.row_encoding.render`, so
the chat template and its span rules are SFT's. Only the reply's own tokens are scored: of a
conversation, the span of its last assistant turn, never an earlier turn of the prompt. Each side
is cut to the token limit; a pair whose prompt alone fills the limit is skipped.

A batch of pairs is one padded batch with every chosen reply in its first half and the rejected
ones in its second (TRL's concatenated forward), plus the reference log-probabilities when the
objective has a reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .formats import FORMATS, turn_text
from .row_encoding import Example, collate, render


@dataclass
class PairExample:
    """One encoded pair; ``reference``: the log-probabilities of chosen and rejected under the reference model."""

    chosen: Example
    rejected: Example
    reference: tuple[float, float] | None = None

    @property
    def truncated(self) -> bool:
        return self.chosen.truncated or self.rejected.truncated

    @property
    def length(self) -> int:
        """The width the pair needs in a batch: its longer side."""
        return max(len(self.chosen.input_ids), len(self.rejected.input_ids))

    @property
    def tokens(self) -> int:
        """Tokens a forward over the pair reads: both sides."""
        return len(self.chosen.input_ids) + len(self.rejected.input_ids)


def pair_rows(row: dict, fmt: str) -> tuple[str, dict, dict]:
    """The format and the two rows a pair is rendered as: prompt + chosen, and prompt + rejected."""
    if FORMATS[fmt].scored_as == "completion":
        return "completion", *({"prompt": row["prompt"], "completion": row[side]} for side in ("chosen", "rejected"))
    turns = ([{"role": "assistant", "content": turn_text(row[side])}] for side in ("chosen", "rejected"))
    return "chat", *({"messages": list(row["prompt"]) + turn} for turn in turns)


def render_pair(row: dict, fmt: str, tokenizer, use_chat: bool) -> list[tuple[str, list[tuple[int, int]], bool]]:
    """``(text, spans, add_eos)`` of prompt + chosen and of prompt + rejected, each scored on its reply alone."""
    kind, *sides = pair_rows(row, fmt)
    rendered = [render(side, kind, tokenizer, use_chat) for side in sides]
    return [(text, spans[-1:], eos) for text, spans, eos in rendered]  # the reply: the last assistant turn


def collate_pairs(pairs: Sequence[PairExample], pad_id: int) -> dict[str, torch.Tensor]:
    """One batch of ``2 x len(pairs)`` rows: the chosen sides, then the rejected ones (:func:`collate` of both).

    ``reference_logps`` (pairs x 2: chosen, rejected) is added when every pair carries its reference's.
    """
    batch = collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
    if pairs and all(p.reference is not None for p in pairs):
        batch["reference_logps"] = torch.tensor([p.reference for p in pairs], dtype=torch.float32)
    return batch
