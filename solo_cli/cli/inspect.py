"""`solo inspect`: what an adapter file holds, or what a plan costs."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Optional

import typer

from ..errors import SoloError, UsageError
from . import display
from .base import app, handle_errors
from .flags import flag_block
from .options import (
    AdapterRevision,
    Dtype,
    Model,
    Revision,
    TrustCode,
    Verbose,
    adapter_path,
    quantize_choice,
    quiet_transformers,
)


@dataclass(frozen=True)
class MemoryFlags:
    """The training run whose memory `solo inspect --model` estimates: `solo train`'s flags of the same names, train's
    defaults for those not given."""

    quantize: Annotated[
        Optional[str], typer.Option(help="Training memory over a quantized base: none, nf4, fp4, int8 or torchao-int8.")
    ] = None
    dtype: Dtype = None
    batch_size: Annotated[Optional[int], typer.Option(help="Training memory at this micro-batch (default: train's 8).")] = None
    max_seq_length: Annotated[
        Optional[int], typer.Option(help="Training memory at this many tokens an example (default: train's 256).")
    ] = None
    grad_checkpoint: Annotated[bool, typer.Option("--grad-checkpoint", help="Training memory with activation checkpointing.")] = (
        False
    )
    world_size: Annotated[Optional[int], typer.Option(help="Training memory of one of this many processes.")] = None
    parallel: Annotated[
        Optional[str], typer.Option(help="ddp (the base on every process) or fsdp (sharded over --world-size).")
    ] = None


@app.command()
@handle_errors
@flag_block("memory", MemoryFlags)
def inspect(
    adapter: Annotated[
        Optional[str],
        typer.Argument(
            help="adapter.safetensors, its run folder, or a Hub repo id (user/name) to describe (no model is loaded)."
        ),
    ] = None,
    *,
    model: Model = None,
    connections: Annotated[Optional[str], typer.Option(help="Plan to cost against --model (default: train's default).")] = None,
    rank: Annotated[Optional[int], typer.Option(help="Rank of the plan, 1 to the model's hidden size.")] = None,
    gate: Annotated[Optional[str], typer.Option(help="Gate mode of the plan: schedule or zero-init.")] = None,
    revision: Revision = None,
    trust_remote_code: TrustCode = False,
    adapter_revision: AdapterRevision = None,
    memory: MemoryFlags,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    verbose: Verbose = False,
) -> None:
    """Describe an adapter file (local or on the Hub), or what a connection plan costs on a model: its parameters beside
    LoRA r=4 on q,v, and the memory training needs beside LoRA r=8 (all linear layers, as QLoRA; and q,v)."""
    if adapter is None and model is None:
        raise UsageError("give an adapter file to describe, or --model M to cost a plan")
    if adapter is not None:
        plan = {"model": model, "connections": connections, "rank": rank, "gate": gate, "revision": revision}
        _refuse_plan_flags(adapter, **plan, **asdict(memory), trust_remote_code=trust_remote_code)
    try:
        adapter = adapter_path(adapter, adapter_revision)  # a Hub repo id: its cached download
    except SoloError as exc:  # the adapter is inspect's argument: no --adapter flag to blame
        raise type(exc)(exc.as_flags({"adapter": "adapter"})) from None
    if adapter is not None:
        from ..inference.report import adapter_report  # imports no torch: describing a file is instant

        rep = adapter_report(adapter)
        display.emit_json(rep) if json_out else display.show_adapter_report(rep)
        return
    from ..training.config import TrainConfig
    from ..training.plan_cost import plan_report

    quiet_transformers()
    defaults = TrainConfig()
    rank = defaults.rank if rank is None else rank
    gate = defaults.gate if gate is None else gate
    settings = _memory_settings(defaults, memory)
    rep = plan_report(model, connections or defaults.connections, rank, gate, revision, bool(trust_remote_code), settings)
    display.emit_json(rep) if json_out else display.show_plan_report(rep)


def _refuse_plan_flags(adapter: str, **flags) -> None:
    """Plan flags beside an adapter file would be ignored: refused, naming those given."""
    given = ["--" + name.replace("_", "-") for name, value in flags.items() if value is not None and value is not False]
    if given:
        one = len(given) == 1
        raise UsageError(
            f"{' and '.join(given)} {'is' if one else 'are'} for costing a plan (solo inspect --model M), not for describing "
            f"an adapter file; drop {'it' if one else 'them'}, or drop {adapter} to cost a plan"
        )


def _memory_settings(defaults, memory: MemoryFlags):
    """The run to estimate: the flags given, train's defaults for the rest (``--dtype auto`` decided for this machine)."""
    from ..engine.choices import DTYPE_CHOICES, PARALLEL_MODES
    from ..engine.precision import resolve_precision
    from ..training.plan_cost import MemorySettings

    quantize, dtype, parallel = memory.quantize, memory.dtype, memory.parallel
    quantize_choice(quantize)
    problems = []
    if dtype is not None and dtype not in DTYPE_CHOICES:
        problems.append(f"--dtype {dtype}: use one of {', '.join(DTYPE_CHOICES)}")
    if parallel is not None and parallel not in PARALLEL_MODES:
        problems.append(f"--parallel {parallel}: use one of {', '.join(PARALLEL_MODES)}")
    for flag, value, least in (
        ("--batch-size", memory.batch_size, 1),
        ("--max-seq-length", memory.max_seq_length, 2),
        ("--world-size", memory.world_size, 1),
    ):
        if value is not None and value < least:
            problems.append(f"{flag} {value}: must be at least {least}")
    if problems:
        raise UsageError("; ".join(problems))
    import torch

    # what solo train would decide here: auto's dtype, and bf16 autocast for float32 on a native-bf16 GPU (the estimate
    # needs no backend, so no quantize check)
    precision = resolve_precision(dtype or defaults.dtype, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    return MemorySettings(
        quantize=quantize or defaults.quantize,
        dtype=precision.dtype,
        autocast=precision.autocast,
        batch_size=memory.batch_size or defaults.batch_size,
        max_seq_length=memory.max_seq_length or defaults.max_seq_length,
        world_size=memory.world_size or 1,
        parallel=parallel or defaults.parallel,
        grad_checkpoint=memory.grad_checkpoint,
    )
