"""Options several commands share, and checks that run while the command line is parsed."""

from __future__ import annotations

import logging
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from ..inference.generation_settings import SEED_MAX
from . import display

# Loggers of other packages whose warnings are noise on solo's terminal. Where installed, bitsandbytes logs
# "Failed to load CPU gemm_4bit_forward ... pip install kernels" on CPUs with AVX512-BF16, and torchao (which
# transformers' quantizers import) "Failed to load .../_C_mxfp8...so" plus torch's pytree deprecation notes;
# solo uses neither. huggingface_hub logs each failed HTTP attempt before the error solo reports in one line.
QUIET_LOGGERS = ("bitsandbytes", "torchao", "torch.utils._pytree", "huggingface_hub.utils._http")


def quiet_other_packages() -> None:
    """Only errors of :data:`QUIET_LOGGERS` reach the terminal. Set before they are imported (their module
    loggers inherit the level), so it runs when the command line is imported."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


quiet_other_packages()


def quiet_transformers() -> None:
    """transformers' own progress bars and advice would drown the output of a CLI (imported only when needed)."""
    quiet_other_packages()
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
