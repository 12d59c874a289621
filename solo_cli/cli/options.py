"""Options several commands share, and checks that run while the command line is parsed."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from ..inference.generation_settings import SEED_MAX, GenerationSettings  # torch-free
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
Adapter = Annotated[Optional[str], typer.Option(help="adapter.safetensors, its run folder, or a Hub repo id (user/name).")]
Force = Annotated[bool, typer.Option("--force", help="Attach an adapter whose base fingerprint differs.")]


@dataclass(frozen=True)
class LoadFlags:
    """The base model a command loads and how (`solo serve`; :class:`TargetFlags` adds the adapter): a block of options
    declared once, which :func:`.flags.flag_block` gives a command."""

    model: Model = None
    revision: Revision = None
    dtype: Dtype = "auto"
    quantize: Quantize = "none"
    device: Device = "auto"
    trust_remote_code: TrustCode = False

    def check(self) -> None:
        """--dtype, --device and --quantize checked as `solo train` checks them, before anything heavy is imported."""
        check_like_train(dtype=self.dtype, device=self.device, quantize=self.quantize)


@dataclass(frozen=True)
class TargetFlags(LoadFlags):
    """The base model and the adapter on it (`solo generate`, `eval`, `chat`): :func:`load_target` loads them."""

    adapter: Adapter = None
    adapter_revision: AdapterRevision = None
    force: Force = False


@dataclass(frozen=True)
class SourceFlags:
    """Where rows come from besides the file or folder itself (`solo generate --input`, `solo eval --data`): its
    config, split and columns, DataSpec's fields of the same names (as `solo train` has them: TrainConfig's fields)."""

    data_config: Annotated[Optional[str], typer.Option(help="Config (subset) of a Hub dataset.")] = None
    data_split: Annotated[Optional[str], typer.Option(help="Split to read (default: test, else validation).")] = None
    text_column: Annotated[Optional[str], typer.Option(help="Column holding the text of text rows (default text).")] = None
    prompt_column: Annotated[Optional[str], typer.Option(help="Column holding the prompts (default prompt).")] = None
    completion_column: Annotated[Optional[str], typer.Option(help="Column holding the completions (default completion).")] = None
    messages_column: Annotated[Optional[str], typer.Option(help="Column holding chat messages (default messages).")] = None


def seed_in_range(value: int | None) -> int | None:
    """--seed out of 0..2**32-1: one error line and exit 2 while parsing, before anything loads.

    (typer's own ``min``/``max`` would print a multi-line usage box instead of solo's one line.)
    """
    if value is not None and not 0 <= value <= SEED_MAX:
        raise UsageError(f"--seed {value}: must be between 0 and {SEED_MAX} (2**32 - 1); pick a seed in that range")
    return value


MaxNewTokens = Annotated[int, typer.Option(help="Tokens to generate at most.")]  # each command sets its default


@dataclass(frozen=True)
class SamplingFlags:
    """How `solo generate` and `solo chat` sample: GenerationSettings' fields of the same names."""

    temperature: Annotated[float, typer.Option(help="0 = greedy; 1e-4 or more samples.")] = 0.0
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0
    top_k: Annotated[int, typer.Option(help="Sample among the k likeliest (0 = off).")] = 0
    seed: Annotated[int, typer.Option(help="Random seed for sampling, 0 to 2**32 - 1.", callback=seed_in_range)] = 0
    stop: Annotated[Optional[list[str]], typer.Option(help="Stop at this string (repeatable).")] = None

    def settings(self, max_new_tokens: int, **more) -> GenerationSettings:
        """The generation settings of these flags, ``max_new_tokens`` and ``more``, checked before anything loads."""
        sampling = asdict(self) | {"stop": list(self.stop or [])}
        return GenerationSettings(max_new_tokens=max_new_tokens, **sampling, **more).validate()


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


def load_target(flags: TargetFlags, adapter: str | None):
    """The base model and ``adapter`` (``flags.adapter``'s local file) for generate, eval and chat, with any --force
    warning and note shown."""
    from ..inference.load import load_for_inference
    from ..training.run import resolve_device

    target = load_for_inference(
        flags.model,
        adapter,
        revision=flags.revision,
        dtype=flags.dtype,
        device=str(resolve_device(flags.device)),
        trust_remote_code=bool(flags.trust_remote_code),
        force=flags.force,
        quantize=flags.quantize,
    )
    for message in target.warnings:
        display.warning(message)
    for note in target.notes:
        display.line(note, display.err)
    return target
