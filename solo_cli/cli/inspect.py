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
    rank: Annotated[Optional[int], typer.Option(help="Rank of the plan, 1 to the model's hidden size.")] = None,
    gate: Annotated[Optional[str], typer.Option(help="Gate mode of the plan: schedule or zero-init.")] = None,
    revision: Revision = None,
    trust_remote_code: TrustCode = False,
    adapter_revision: AdapterRevision = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Describe an adapter file (local or on the Hub), or what a connection plan costs on a model (beside LoRA r=4 on q,v)."""
    if adapter is None and model is None:
        raise UsageError("give an adapter file to describe, or --model M to cost a plan")
    if adapter is not None:
        plan = {"model": model, "connections": connections, "rank": rank, "gate": gate, "revision": revision}
        _refuse_plan_flags(adapter, **plan, trust_remote_code=trust_remote_code)
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
    rep = plan_report(
        model,
        connections or defaults.connections,
        defaults.rank if rank is None else rank,
        defaults.gate if gate is None else gate,
        revision,
        bool(trust_remote_code),
    )
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
