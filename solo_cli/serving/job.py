"""A job: one prompt's generation inside the server, from its token ids to its finish, and what it reports.

An HTTP request makes one job per prompt (``choices[index]``). The handler fills in the fields;
the scheduler's thread owns the rest and reports through ``sink``, which must be safe to call
from that thread (the app hands each job a function that posts onto its event loop).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .text import TextStream


@dataclass
class Event:
    """What a job reports: new text, and once, how it finished (``finish_reason`` or ``error``)."""

    index: int
    text: str = ""
    finish_reason: str | None = None  # "stop" (end of sequence or a stop string), "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None  # the job failed inside the server

    @property
    def final(self) -> bool:
        return self.finish_reason is not None or self.error is not None


@dataclass
class Job:
    """One prompt to continue: its tokens, which adapter (slot) and how to sample."""

    prompt_ids: list[int]
    slot: int  # the adapter's slot in the engine's MixedAdapters (0: the base)
    scale: float
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stops: list[str]
    stream: bool  # report text as it comes (else only the final event)
    sink: Callable[[Event], None]
    index: int = 0
    cancelled: bool = False  # set from another thread: the client left; the scheduler drops the job
    # owned by the scheduler's thread from here on
    text: TextStream | None = None
    generator: torch.Generator | None = None
    tokens: int = 0  # generated so far, the end-of-sequence token included
    pending: int = -1  # the last token sampled, fed to the next decode step
    length: int = 0  # tokens in the cache
    done: bool = field(default=False)

    def report(self, event: Event) -> None:
        """Send ``event``; a sink that fails (its client's loop is gone) cancels the job."""
        try:
            self.sink(event)
        except RuntimeError:
            self.cancelled = True
