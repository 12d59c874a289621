"""Options several commands share, and checks that run while the command line is parsed."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..errors import UsageError
from . import display


def quiet_transformers() -> None:
    """transformers' own progress bars and advice would drown the output of a CLI (imported only when needed)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


Model = Annotated[Optional[str], typer.Option("--model", "-m", help="Built-in name (smollm2-135m), model folder or hub id.")]
Revision = Annotated[Optional[str], typer.Option(help="Hub revision (branch, tag or commit) of --model.")]
AdapterRevision = Annotated[Optional[str], typer.Option(help="Hub revision (branch, tag or commit) of a Hub --adapter.")]
TrustCode = Annotated[
    Optional[bool], typer.Option("--trust-remote-code", help="Run code shipped with a hub model (off unless asked).")
]
Dtype = Annotated[
    Optional[str],
    typer.Option(help="auto (bfloat16 where this hardware runs it faster, else float32), float32, bfloat16 or float16."),
]
Device = Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
# Where rows come from, besides the file or folder itself (as `solo train` has them: TrainConfig's fields).
DataConfig = Annotated[Optional[str], typer.Option(help="Config (subset) of a Hub dataset.")]
DataSplit = Annotated[Optional[str], typer.Option(help="Split to read (default: test, else validation).")]
TextColumn = Annotated[Optional[str], typer.Option(help="Column holding the text of text rows (default text).")]
PromptColumn = Annotated[Optional[str], typer.Option(help="Column holding the prompts (default prompt).")]
CompletionColumn = Annotated[Optional[str], typer.Option(help="Column holding the completions (default completion).")]
MessagesColumn = Annotated[Optional[str], typer.Option(help="Column holding chat messages (default messages).")]


SEED_MAX = 2**32 - 1  # numpy's and transformers' set_seed accept no more


def seed_in_range(value: int | None) -> int | None:
    """--seed out of 0..2**32-1: one error line and exit 2 while parsing, before anything loads.

    (typer's own ``min``/``max`` would print a multi-line usage box instead of solo's one line.)
    """
    if value is not None and not 0 <= value <= SEED_MAX:
        raise UsageError(f"--seed {value}: must be between 0 and {SEED_MAX} (2**32 - 1); pick a seed in that range")
    return value


def rank_at_least_1(value: int | None) -> int | None:
    """--rank below 1: one error line and exit 2 while parsing (before any adapter is read)."""
    if value is not None and value < 1:
        raise UsageError(f"--rank {value}: must be at least 1 (the rank of every merged connection)")
    return value


def adapter_path(adapter: str | None, revision: str | None = None) -> str | None:
    """``--adapter`` as a local path: a Hub repo id (``user/name``) is fetched into the hub cache first."""
    if adapter is None:
        if revision is not None:
            raise UsageError(f"--adapter-revision {revision}: give the Hub --adapter it is a revision of")
        return None
    from ..files.hub import resolve_adapter_ref

    return resolve_adapter_ref(adapter, revision)


def load_target(model, adapter, revision, dtype, device, trust_remote_code, force):
    """Base model (+ adapter) for generate and eval, with any --force warning shown."""
    from ..inference.load import load_for_inference
    from ..training.run import resolve_device

    target = load_for_inference(
        model,
        adapter,
        revision=revision,
        dtype=dtype,
        device=str(resolve_device(device)),
        trust_remote_code=bool(trust_remote_code),
        force=force,
    )
    for message in target.warnings:
        display.warning(message)
    return target
