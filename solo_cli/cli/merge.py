"""`solo merge`: combine adapters, or export base + adapter as one model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import SoloError, UsageError
from . import display
from .base import app, handle_errors
from .options import Model, Revision, TrustCode, Verbose, adapter_path, quiet_transformers, rank_at_least_1


@app.command()
@handle_errors
def merge(
    adapters: Annotated[
        list[str],
        typer.Argument(
            help="Adapters to combine (same base), or one adapter to --export: files, run folders or Hub repo ids "
            "(user/name, or user/name@revision)."
        ),
    ],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where the merged adapter goes.")] = None,
    weights: Annotated[
        Optional[str], typer.Option(help="One weight per adapter, e.g. 0.7,0.3 (default: equal, summing to 1).")
    ] = None,
    rank: Annotated[
        Optional[int],
        typer.Option(
            help="Rank of the merged adapter (default: the rank that makes the merge exact, the sum of the ranks of "
            "the inputs sharing a connection, at most the hidden size); a lower rank is smaller and lossy (its error "
            "is printed).",
            callback=rank_at_least_1,
        ),
    ] = None,
    model: Model = None,
    export: Annotated[Optional[Path], typer.Option(help="Write a standalone model folder (base + adapter) here.")] = None,
    revision: Revision = None,
    trust_remote_code: TrustCode = False,
    force: Annotated[bool, typer.Option("--force", help="Export with a base whose fingerprint differs.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --output or --export.")] = False,
    verbose: Verbose = False,
) -> None:
    """Combine adapters of one base into one, or export base + adapter as a standalone model folder."""
    from ..files.outputs import check_adapter_target

    given = {"weights": weights, "rank": rank, "model": model, "revision": revision, "force": force}
    _check_flags(len(adapters), output, export, **given, trust_remote_code=trust_remote_code)
    quiet_transformers()  # after the flags are checked: a wrong one is refused before torch is imported
    try:
        adapters = [adapter_path(ref) for ref in adapters]  # Hub repo ids: their cached downloads
    except SoloError as exc:  # the adapters are merge's arguments: no --adapter flag to blame
        raise type(exc)(exc.as_flags({"adapter": "adapter"})) from None
    if export is not None:
        from ..merging.export import export_model

        loading = {"revision": revision, "trust_remote_code": bool(trust_remote_code), "force": force}
        display.show_export(export_model(adapters[0], model, export, **loading, overwrite=overwrite))
        return
    from ..engine.adapter_file import save_adapter
    from ..merging.combine import merge_adapters, parse_weights

    check_adapter_target(output, overwrite)  # solo replaces only an adapter it wrote
    result = merge_adapters(adapters, parse_weights(weights, len(adapters)), rank)
    path = save_adapter(output, result.adapter, result.info)
    display.show_merge(path, result)


def _check_flags(count: int, output: Path | None, export: Path | None, **given) -> None:
    """Each flag belongs to one of the two jobs, merging (-o) or exporting (--export): refuse the other job's."""
    if output is not None and export is not None:
        raise UsageError(
            "-o/--output and --export are two different jobs: -o writes a merged adapter, --export a model folder; "
            "give one of them (to export a merge, merge with -o first, then --export the merged adapter)"
        )
    if output is None and export is None:
        raise UsageError("give -o merged.safetensors for the merged adapter (or --export DIR with one adapter)")
    if export is not None and count != 1:
        raise UsageError(f"--export takes exactly one adapter, not {count}; merge them first with -o, then export the result")
    if export is not None:
        names, why = ("weights", "rank"), "only to merging with -o; --export takes the one adapter as it is"
    else:
        names, why = ("model", "revision", "force", "trust_remote_code"), "only to --export; merging with -o reads no model"
    wrong = ["--" + name.replace("_", "-") for name in names if given[name] is not None and given[name] is not False]
    if wrong:
        verb, pronoun = ("applies", "it") if len(wrong) == 1 else ("apply", "them")
        raise UsageError(f"{' and '.join(wrong)} {verb} {why}; drop {pronoun}")
