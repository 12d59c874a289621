"""`solo train`: flags in, one training run out.

Its options are TrainConfig's fields (solo_cli/cli/flags.py builds them): a new field is a new flag.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import SoloError, UsageError
from . import display, third_party
from .base import app, handle_errors
from .flags import config_options
from .options import Verbose, quiet_transformers


@app.command()
@handle_errors
@config_options  # one option per TrainConfig field (solo_cli/training/config.py), before --config and --dry-run
def train(
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file of options; flags override it.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show config, data statistics and the first example's mask, then exit.")
    ] = False,
    verbose: Verbose = False,
    **options,
) -> None:
    """Train a Solo adapter on JSONL, JSON, CSV or Parquet rows, a save_to_disk folder or a Hub dataset.

    Other packages' warnings go to third_party.log in the run folder (--verbose shows them too).
    """
    from ..data.sources import check_location
    from ..training.config import build_config

    # every flag's value is checked before torch, transformers or bitsandbytes are imported (seconds)
    cfg = build_config(config, options)
    if not cfg.data:  # before check_output makes the run folder
        raise UsageError("--data is required: a .jsonl file or a folder with train.jsonl")
    check_location(cfg.data_spec())  # a missing or unreadable --data is refused before anything is written
    quiet_transformers(data=True)
    from ..files.lock import release
    from ..training.compiled import refuse_missing_compiler
    from ..training.prepared import resolve_device
    from ..training.resume import RunComplete
    from ..training.run import check_output, prepare, replace_output

    refuse_missing_compiler(cfg.compile, resolve_device(cfg.device))  # --compile on without g++ (or triton)

    made = _missing_folders(Path(cfg.output))  # what check_output creates, removed again if the run is refused
    if not dry_run:
        # fail before loading anything; takes the folder's lock, which execute releases. The run that
        # --overwrite replaces stays until the model and every data row have loaded: a bad input loses nothing.
        try:
            check_output(cfg, replace=False)
        except RunComplete as done:  # --resume auto of a finished run: said, exit 0, nothing touched
            display.line(done.as_flags())
            return
    try:
        run = prepare(cfg)
        if not dry_run:
            replace_output(cfg)
    except BaseException:
        release(cfg.output)
        _remove_empty(made)
        raise
    for note in run.notes:  # keys or columns of --data that no field uses, said once per split
        display.line(note, display.err)
    if run.train.skipped:
        display.warning(
            f"skipped {run.train.skipped} of {run.train.stats['rows']} training rows whose prompt "
            f"alone exceeds --max-seq-length {cfg.max_seq_length}"
        )
    if dry_run:
        _show_dry_run(run)
    else:
        _execute(run)


def _missing_folders(out: Path) -> list[Path]:
    """``out`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for folder in (out, *out.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a refused run created, deepest first, while they are empty (nothing else is touched)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _execute(run) -> None:
    """Train: an interrupt says how to resume, and under torchrun an error says which process failed."""
    from ..training import distributed
    from ..training.run import execute
    from ..training.run_folder import RunFolder
    from ..training.trainer import Interrupted

    third_party.write_to(RunFolder(run.cfg.output, writes=run.ctx.is_main).append_third_party)  # the run's folder is taken
    try:
        execute(run, display.TrainDisplay())
    except Interrupted as exc:
        raise Interrupted(f"{exc.text}; resume with: {resume_command(sys.argv)}") from None
    except SoloError as exc:
        if run.ctx.enabled:  # say which process failed; torchrun then stops the others
            raise type(exc)(f"rank {run.ctx.rank}: {exc.text}") from None
        raise
    finally:
        distributed.shutdown()


def resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted run: the same flags, --resume auto, no --overwrite."""
    args, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--overwrite" or arg.startswith("--resume="):
            continue
        if arg == "--resume":
            skip = True
            continue
        args.append(shlex.quote(arg))
    return " ".join(["solo", *args, "--resume", "auto"])


def _show_dry_run(run) -> None:
    """The resolved config, the data's statistics, the first example's mask and the parameter counts."""
    from ..engine.topology import format_connections
    from ..training.run import param_summary

    tokenizer = run.loaded.tokenizer
    first = run.train.examples[0]
    first = getattr(first, "chosen", first)  # a preference pair: its chosen side shows the mask
    from ..inference.generation import token_pieces  # characters split across tokens show whole, not as U+FFFD

    pieces = [(text, label != -100) for text, label in zip(token_pieces(tokenizer, first.input_ids), first.labels)]
    config = _resolved_options(run) | {
        "connections (resolved)": format_connections(run.adapter.config.connections),
        "dtype (resolved)": run.loaded.precision.reason,
        "total steps": run.steps,
        "data format": run.train.fmt,
        "chat template": run.train.chat_template,
    }
    stats = {"train": run.train.stats} | ({"valid": run.valid.stats} if run.valid else {})
    display.show_dry_run(config, stats, pieces, param_summary(run.loaded.model, run.adapter))


def _resolved_options(run) -> dict:
    """Every option as the run takes it: an option left to its default shows what it became (``-``: not set)."""
    cfg = run.cfg
    eval_every, save_every = cfg.intervals(run.steps)
    resolved = {
        "eval_every": f"{eval_every} (5 times in {run.steps} steps)",
        "save_every": f"{save_every} (as --eval-every)",
        "homotopy_steps": f"{run.adapter.config.homotopy_steps} ({cfg.homotopy_fraction or 0.1:g} of {run.steps} steps)",
        "max_steps": f"{run.steps} ({cfg.epochs:g} epoch{'' if cfg.epochs == 1 else 's'})",
        "chat_template": "auto (where the tokenizer has one)",
        "keep_checkpoints": "all",
    }
    if cfg.gate != "schedule":
        resolved["homotopy_steps"] = f"- (--gate {cfg.gate} has no ramp)"
    values = cfg.to_dict()
    return {key: resolved.get(key, "-") if value is None else value for key, value in values.items()}
