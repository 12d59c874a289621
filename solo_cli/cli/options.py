"""Options several commands share, and checks that run while the command line is parsed."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..errors import UsageError
from ..inference.generation_settings import SEED_MAX
from . import display, third_party


def quiet_transformers(*, data: bool = False) -> None:
    """Before a model loads: transformers' progress bars off, and the console handlers that torch, transformers and
    huggingface_hub (with ``data``, datasets too) attach to their loggers when imported set aside, so that what they
    log goes to the command's :mod:`.third_party` sink (the run folder's log; stderr under --verbose) instead."""
    import torch  # noqa: F401  (imported here for its loggers; every caller loads a model next)
    from transformers.utils import logging as hf_logging

    if data:  # the caller reads rows next: imported now, so that its handler is set aside with the others
        import datasets  # noqa: F401
    hf_logging.disable_progress_bar()
    third_party.route()


def check_like_train(**values) -> None:
    """Flags a command shares with `solo train` (--dtype, --device, --quantize), checked as `solo train` checks them
    (:meth:`TrainConfig.validate`, torch-free): a bad value is one line before anything heavy is imported."""
    from ..training.config import TrainConfig

    TrainConfig(**{name: value for name, value in values.items() if value is not None}).validate()


Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose",
        help="Also show other packages' warnings and log lines (transformers, torch, bitsandbytes, datasets, "
        "huggingface_hub) on stderr; solo train keeps them in third_party.log in the run folder either way.",
    ),
]  # taken by handle_errors (solo_cli/cli/base.py), which routes them for the length of the command


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


def quantize_choice(value: str | None) -> str | None:
    """--quantize not one of its choices: one error line and exit 2 while parsing, before anything loads."""
    from ..engine.quantization import QUANTIZE_CHOICES

    if value is not None and value not in QUANTIZE_CHOICES:
        raise UsageError(f"--quantize {value}: use one of {', '.join(QUANTIZE_CHOICES)}")
    return value


Quantize = Annotated[
    str,
    typer.Option(
        help="Load the base's linear weights quantized: none, nf4, fp4 or int8 (pip install 'solo-cli[quantize]'), "
        "or torchao-int8 ('solo-cli[torchao]').",
        callback=quantize_choice,
    ),
]
# Where rows come from, besides the file or folder itself (as `solo train` has them: TrainConfig's fields).
DataConfig = Annotated[Optional[str], typer.Option(help="Config (subset) of a Hub dataset.")]
DataSplit = Annotated[Optional[str], typer.Option(help="Split to read (default: test, else validation).")]
TextColumn = Annotated[Optional[str], typer.Option(help="Column holding the text of text rows (default text).")]
PromptColumn = Annotated[Optional[str], typer.Option(help="Column holding the prompts (default prompt).")]
CompletionColumn = Annotated[Optional[str], typer.Option(help="Column holding the completions (default completion).")]
MessagesColumn = Annotated[Optional[str], typer.Option(help="Column holding chat messages (default messages).")]
ChosenColumn = Annotated[Optional[str], typer.Option(help="Column holding the preferred replies (default chosen).")]
RejectedColumn = Annotated[Optional[str], typer.Option(help="Column holding the rejected replies (default rejected).")]


def seed_in_range(value: int | None) -> int | None:
    """--seed out of 0..2**32-1: one error line and exit 2 while parsing, before anything loads.

    (typer's own ``min``/``max`` would print a multi-line usage box instead of solo's one line.)
    """
    if value is not None and not 0 <= value <= SEED_MAX:
        raise UsageError(f"--seed {value}: must be between 0 and {SEED_MAX} (2**32 - 1); pick a seed in that range")
    return value


# The generation flags `solo generate` and `solo chat` share (GenerationSettings' fields; each command sets its default).
MaxNewTokens = Annotated[int, typer.Option(help="Tokens to generate at most.")]
Temperature = Annotated[float, typer.Option(help="0 = greedy; 1e-4 or more samples.")]
TopP = Annotated[float, typer.Option(help="Nucleus sampling mass.")]
TopK = Annotated[int, typer.Option(help="Sample among the k likeliest (0 = off).")]
Seed = Annotated[int, typer.Option(help="Random seed for sampling, 0 to 2**32 - 1.", callback=seed_in_range)]
Stop = Annotated[Optional[list[str]], typer.Option(help="Stop at this string (repeatable).")]
Force = Annotated[bool, typer.Option("--force", help="Attach an adapter whose base fingerprint differs.")]


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


def load_target(model, adapter, revision, dtype, device, trust_remote_code, force, quantize="none"):
    """Base model (+ adapter) for generate and eval, with any --force warning and note shown."""
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
        quantize=quantize,
    )
    for message in target.warnings:
        display.warning(message)
    for note in target.notes:
        display.line(note, display.err)
    return target
