"""`solo train`: flags in, one training run out."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import SoloError, UsageError
from . import display
from .base import app, handle_errors
from .options import Device, Dtype, Model, Revision, TrustCode, quiet_transformers, seed_in_range


@app.command()
@handle_errors
def train(
    data: Annotated[
        Optional[str], typer.Option(help="JSONL file, or a folder with train.jsonl [valid.jsonl test.jsonl].")
    ] = None,
    model: Model = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Run folder (default runs/solo).")] = None,
    connections: Annotated[Optional[str], typer.Option(help="top:N[:S], mirror[:N], chain:K or '3->9,5->11' (emb = -1).")] = None,
    rank: Annotated[Optional[int], typer.Option(help="Rank of every connection.")] = None,
    gate: Annotated[Optional[str], typer.Option(help="Homotopy gate: schedule (t ramps 0->1) or zero-init (B = 0).")] = None,
    source_norm: Annotated[Optional[str], typer.Option(help="Normalise each source h_i before A: rms (default) or none.")] = None,
    homotopy_steps: Annotated[Optional[int], typer.Option(help="Steps of the 0->1 ramp for --gate schedule.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Optimizer steps (overrides --epochs).")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Passes over the training data.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Examples per micro-batch.")] = None,
    grad_accum: Annotated[Optional[int], typer.Option(help="Micro-batches per optimizer step.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate.")] = None,
    warmup: Annotated[Optional[int], typer.Option(help="Linear warm-up steps.")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="Learning-rate schedule: linear, cosine or constant.")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="AdamW weight decay on A and B.")] = None,
    label_smoothing: Annotated[Optional[float], typer.Option(help="Label smoothing of the loss.")] = None,
    max_seq_length: Annotated[Optional[int], typer.Option(help="Tokens per example (longer ones are cut).")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Validate every N steps (default: 5 times per run).")] = None,
    save_every: Annotated[Optional[int], typer.Option(help="Checkpoint every N steps (default: --eval-every).")] = None,
    seed: Annotated[
        Optional[int], typer.Option(help="Random seed (init and data order), 0 to 2**32 - 1.", callback=seed_in_range)
    ] = None,
    dtype: Dtype = None,
    device: Device = None,
    grad_checkpoint: Annotated[
        Optional[bool], typer.Option("--grad-checkpoint", help="Recompute activations to save memory.")
    ] = None,
    train_on_prompt: Annotated[Optional[bool], typer.Option("--train-on-prompt", help="Take loss on prompt tokens too.")] = None,
    chat_template: Annotated[
        Optional[bool],
        typer.Option(
            "--chat-template/--no-chat-template",
            help="Use the tokenizer's chat template for prompt/completion rows (default: when it has one).",
        ),
    ] = None,
    revision: Revision = None,
    trust_remote_code: TrustCode = None,
    overwrite: Annotated[Optional[bool], typer.Option("--overwrite", help="Replace a run already in --output.")] = None,
    resume: Annotated[
        Optional[str], typer.Option(help="Continue from 'auto' (the newest checkpoint in --output) or a checkpoint folder.")
    ] = None,
    keep_checkpoints: Annotated[Optional[int], typer.Option(help="Keep only the newest N checkpoints.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file of options; flags override it.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show config, data statistics and the first example's mask, then exit.")
    ] = False,
) -> None:
    """Train a Solo adapter on a JSONL dataset."""
    flags = {k: v for k, v in locals().items() if k not in ("config", "dry_run")}  # first: only the options are locals here
    quiet_transformers()
    from ..data.rows import resolve_data
    from ..files.lock import release
    from ..training import distributed
    from ..training.config import build_config
    from ..training.run import check_output, execute, param_summary, prepare
    from ..training.trainer import Interrupted

    cfg = build_config(config, flags)
    if not cfg.data:  # before check_output makes the run folder
        raise UsageError("--data is required: a .jsonl file or a folder with train.jsonl")
    resolve_data(cfg.data)  # a missing or unreadable --data is refused before anything is written
    if not dry_run:
        check_output(cfg)  # fail before loading anything; takes the folder's lock, which execute releases
    try:
        run = prepare(cfg)
    except BaseException:
        release(cfg.output)
        raise
    if run.train.skipped:
        display.warning(
            f"skipped {run.train.skipped} of {run.train.stats['rows']} training rows whose prompt "
            f"alone exceeds --max-seq-length {cfg.max_seq_length}"
        )
    if dry_run:
        _show_dry_run(run, param_summary(run.loaded.model, run.adapter))
        return
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


def _show_dry_run(run, summary: dict) -> None:
    from ..engine.topology import format_connections

    tokenizer = run.loaded.tokenizer
    first = run.train.examples[0]
    from ..inference.generation import token_pieces  # characters split across tokens show whole, not as U+FFFD

    pieces = [(text, label != -100) for text, label in zip(token_pieces(tokenizer, first.input_ids), first.labels)]
    config = run.cfg.to_dict() | {
        "connections (resolved)": format_connections(run.adapter.config.connections),
        "total steps": run.steps,
        "data format": run.train.fmt,
        "chat template": run.train.chat_template,
    }
    stats = {"train": run.train.stats} | ({"valid": run.valid.stats} if run.valid else {})
    display.show_dry_run(config, stats, pieces, summary)
