"""`solo inspect`: what an adapter file holds, or what a plan costs."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..errors import UsageError
from . import display
from .base import app, handle_errors
from .options import AdapterRevision, Model, Revision, TrustCode, adapter_path, quiet_transformers


@app.command()
@handle_errors
def inspect(
    adapter: Annotated[
        Optional[str],
        typer.Argument(
            help="adapter.safetensors, its run folder, or a Hub repo id (user/name) to describe (no model is loaded)."
        ),
    ] = None,
    model: Model = None,
    connections: Annotated[Optional[str], typer.Option(help="Plan to cost against --model (default: train's default).")] = None,
    rank: Annotated[Optional[int], typer.Option(help="Rank of the plan.")] = None,
    gate: Annotated[Optional[str], typer.Option(help="Gate mode of the plan.")] = None,
    revision: Revision = None,
    trust_remote_code: TrustCode = False,
    adapter_revision: AdapterRevision = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Describe an adapter file (local or on the Hub), or what a connection plan costs on a model (beside LoRA r=4 on q,v)."""
    if adapter is None and model is None:
        raise UsageError("give an adapter file to describe, or --model M to cost a plan")
    adapter = adapter_path(adapter, adapter_revision)  # a Hub repo id: its cached download
    if adapter is not None:
        from ..inference.report import adapter_report  # imports no torch: describing a file is instant

        rep = adapter_report(adapter)
        display.emit_json(rep) if json_out else display.show_adapter_report(rep)
        return
    from ..inference.plan_report import plan_report
    from ..training.config import TrainConfig

    quiet_transformers()
    defaults = TrainConfig()
    if rank is not None and rank < 1:
        raise UsageError(f"--rank {rank}: must be at least 1")
    rep = plan_report(
        model,
        connections or defaults.connections,
        rank or defaults.rank,
        gate or defaults.gate,
        revision,
        bool(trust_remote_code),
    )
    display.emit_json(rep) if json_out else display.show_plan_report(rep)
