"""A training run end to end: resolve the config, load model and data, train, write the outputs.

Output folder: ``adapter.safetensors``, ``best/adapter.safetensors`` (with validation data),
``checkpoints/step-N/``, ``metrics.jsonl``, ``config.json`` and ``loss.png``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import set_seed

from . import __version__, distributed
from .adapter import AdapterConfig, AttachedAdapter, SoloAdapter, attach
from .adapter_file import AdapterInfo, save_adapter
from .atomic import write_json, write_text
from .blocks import Fingerprint, fingerprint
from .checkpoint import find_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from .config import TrainConfig
from .data import EncodedData, context_length, encode_rows, read_rows, resolve_data
from .distributed import DistContext
from .errors import UsageError
from .models import LoadedModel, load_model
from .plot import plot_losses
from .topology import format_connections, parse_connections
from .trainer import Callback, Interrupted, Trainer, TrainState, evaluate_loss, set_checkpointing, total_steps

RUN_MARKERS = ("adapter.safetensors", "metrics.jsonl", "checkpoints")


def resolve_device(name: str, ctx: DistContext | None = None) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a usage error.

    Under torchrun each process on CUDA takes the GPU of its LOCAL_RANK.
    """
    ctx = ctx or DistContext()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and ctx.enabled and torch.cuda.is_available():
        name = f"cuda:{ctx.local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available here; use --device cpu (or auto)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: MPS is not available here; use --device cpu (or auto)")
    return torch.device(name)


def param_summary(model, adapter: SoloAdapter) -> dict:
    """Trainable (adapter) and total parameter counts, as PEFT's print_trainable_parameters has them."""
    trainable = adapter.num_parameters()
    total = sum(p.numel() for p in model.parameters()) + trainable
    return {"trainable": trainable, "total": total, "percent": 100.0 * trainable / total}


@dataclass
class PreparedRun:
    cfg: TrainConfig
    loaded: LoadedModel
    fingerprint: Fingerprint
    adapter: SoloAdapter
    train: EncodedData
    valid: EncodedData | None
    steps: int
    device: torch.device
    ctx: DistContext


def _encode(path, tokenizer, cfg: TrainConfig, fmt_expected: str | None = None, context: int | None = None) -> EncodedData:
    rows, fmt = read_rows(path)
    if fmt_expected and fmt != fmt_expected:
        raise UsageError(f"{path}: its rows are {fmt!r} but the training rows are {fmt_expected!r}; use one format")
    encoded = encode_rows(
        rows,
        fmt,
        tokenizer,
        chat_template=cfg.chat_template,
        train_on_prompt=cfg.train_on_prompt,
        max_len=cfg.max_seq_length,
        context=context,
    )
    if not encoded.examples:
        raise UsageError(
            f"{path}: every row's prompt is longer than the limit of {encoded.limit} tokens "
            f"(--max-seq-length {cfg.max_seq_length}, or the model's context); shorten the prompts or raise --max-seq-length"
        )
    return encoded


def prepare(cfg: TrainConfig, loaded: LoadedModel | None = None, ctx: DistContext | None = None) -> PreparedRun:
    """Load (or take) the model, read and tokenize the data, and build a fresh adapter.

    Under a distributed launcher (``ctx`` from the environment) this joins the process group.
    """
    if not cfg.data:
        raise UsageError("--data is required: a .jsonl file or a folder with train.jsonl")
    files = resolve_data(cfg.data)
    ctx = ctx or distributed.from_env()
    device = resolve_device(cfg.device, ctx)
    distributed.init(ctx, device)
    loaded = loaded or load_model(
        cfg.model, revision=cfg.revision, dtype=cfg.dtype, device=str(device), trust_remote_code=cfg.trust_remote_code
    )
    fp = fingerprint(loaded.model)
    connections = parse_connections(cfg.connections, fp.num_blocks)
    context = context_length(loaded.model)
    train = _encode(files.train, loaded.tokenizer, cfg, context=context)
    if len(train.examples) < cfg.batch_size * ctx.world_size:
        raise UsageError(
            f"--data {files.train}: {len(train.examples)} usable examples, fewer than one batch "
            f"(--batch-size {cfg.batch_size} x {ctx.world_size} processes); add rows or lower --batch-size"
        )
    valid = None
    if files.valid:
        valid = _encode(files.valid, loaded.tokenizer, cfg, train.fmt, context)
        valid.examples = valid.examples[: cfg.max_eval_rows] if cfg.max_eval_rows else valid.examples
    steps = total_steps(cfg, len(train.examples), ctx.world_size)
    homotopy = cfg.homotopy_steps or max(1, steps // 10)
    set_seed(cfg.seed)
    adapter = SoloAdapter(AdapterConfig(connections, cfg.rank, cfg.gate, homotopy, fp.hidden_size, source_norm=cfg.source_norm))
    return PreparedRun(cfg, loaded, fp, adapter, train, valid, steps, device, ctx)


def check_output(cfg: TrainConfig) -> Path:
    """Refuse to train into a folder that holds a run, unless --overwrite; fail early if unwritable.

    Under a distributed launcher only rank 0 touches the folder.
    """
    out = Path(cfg.output)
    if not distributed.from_env().is_main:
        return out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out}: exists and is not a folder; choose another path")
    held = [m for m in RUN_MARKERS if (out / m).exists()]
    if cfg.resume is not None:
        find_checkpoint(out, cfg.resume)  # fails now, before any loading, if there is nothing to resume
        return out
    if held and not cfg.overwrite:
        raise UsageError(f"--output {out}: already holds a run ({', '.join(held)}); pass --overwrite or choose another folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".solo-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--output {out}: cannot write there ({exc.strerror}); choose a writable folder") from None
    if held:
        for marker in held:
            target = out / marker
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        for extra in ("best", "loss.png", "config.json"):
            target = out / extra
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
    return out


def _info(run: PreparedRun, state: TrainState, started: float) -> AdapterInfo:
    cfg = run.cfg
    training = {
        "steps": state.step,
        "examples": len(run.train.examples),
        "tokens": state.tokens,
        "final_loss": state.last_loss,
        "best_valid_loss": state.best_valid_loss,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "grad_accum": cfg.grad_accum,
        "max_seq_length": cfg.max_seq_length,
        "seed": cfg.seed,
        "dtype": cfg.dtype,
        "data": str(cfg.data),
        "train_on_prompt": cfg.train_on_prompt,
        "seconds": round(time.perf_counter() - started, 2),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return AdapterInfo(
        config=run.adapter.config,
        fingerprint=run.fingerprint,
        base_model=run.loaded.name,
        base_revision=run.loaded.revision,
        data_format=run.train.fmt,
        chat_template=run.train.chat_template,
        training=training,
    )


@dataclass
class TrainResult:
    output: Path
    adapter_path: Path
    best_path: Path | None
    steps: int
    final_loss: float | None
    best_valid_loss: float | None
    seconds: float


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after ``step`` (they belong to the part of the run being redone)."""
    if path.is_file():
        kept = [
            line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and json.loads(line)["step"] <= step
        ]
        write_text(path, "".join(line + "\n" for line in kept))


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer):
    """SIGINT/SIGTERM ask the trainer to stop after the current step; a second SIGINT aborts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request_stop(signum, frame):
        if trainer.stop_requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        trainer.stop_requested = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def execute(run: PreparedRun, callback: Callback | None = None) -> TrainResult:
    """Train ``run``'s adapter and write every output. The folder must have passed ``check_output``.

    Raises :class:`Interrupted` (exit 130) after checkpointing when SIGINT or SIGTERM arrives.
    """
    cfg, ctx = run.cfg, run.ctx
    callback = callback if (callback and ctx.is_main) else (lambda event, info: None)  # only rank 0 reports
    out = Path(cfg.output)
    model, tokenizer = run.loaded.model, run.loaded.tokenizer
    metrics_file = out / "metrics.jsonl"
    best_path = out / "best" / "adapter.safetensors" if run.valid else None
    started = time.perf_counter()

    def log(line: dict) -> None:
        if ctx.is_main:
            with metrics_file.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")

    trainer = Trainer(
        model, run.adapter, cfg, tokenizer.pad_token_id, run.device, run.steps, _logging_callback(callback, log), ctx
    )
    state = TrainState()
    if cfg.resume is not None:
        folder = find_checkpoint(out, cfg.resume)
        state = load_checkpoint(folder, trainer)
        if ctx.is_main:
            _truncate_metrics(metrics_file, state.step)
        callback("resume", {"step": state.step, "path": str(folder)})
    elif ctx.is_main:
        resolved = cfg.to_dict() | {
            "connections_resolved": format_connections(run.adapter.config.connections),
            "homotopy_steps_resolved": run.adapter.config.homotopy_steps,
            "total_steps": run.steps,
            "trainable_params": run.adapter.num_parameters(),
            "solo_version": __version__,
        }
        write_json(out / "config.json", resolved)

    def on_eval(st: TrainState) -> None:
        if not run.valid:
            return
        loss = evaluate_loss(model, run.valid.examples, cfg.batch_size, tokenizer.pad_token_id, run.device, ctx)
        log({"step": st.step, "valid_loss": round(loss, 6)})
        improved = st.best_valid_loss is None or loss < st.best_valid_loss
        if improved:
            st.best_valid_loss = loss
            if ctx.is_main:
                save_adapter(best_path, run.adapter, _info(run, st, started))
        callback("eval", {"step": st.step, "valid_loss": loss, "best": improved})

    def on_save(st: TrainState) -> Path:
        folder = out / "checkpoints" / f"step-{st.step}"
        if ctx.is_main:
            save_checkpoint(folder, trainer, st, _info(run, st, started))
            prune_checkpoints(out, cfg.keep_checkpoints)
            callback("save", {"step": st.step, "path": str(folder)})
        ctx.barrier()  # no rank runs ahead of a checkpoint it may be asked to resume from
        return folder

    if cfg.grad_checkpoint:
        set_checkpointing(model, True)
    handle: AttachedAdapter = attach(model, run.adapter)
    callback(
        "start",
        param_summary(model, run.adapter)
        | {
            "total_steps": run.steps,
            "examples": len(run.train.examples),
            "connections": format_connections(run.adapter.config.connections),
            "start_step": state.step,
        },
    )
    try:
        with _stop_on_signals(trainer):
            trainer.run(run.train.examples, state, on_eval, on_save)
    except Interrupted as exc:
        folder = on_save(state)
        raise Interrupted(f"{exc.message}; checkpoint saved in {folder}") from None
    finally:
        handle.detach()
        if cfg.grad_checkpoint:
            set_checkpointing(model, False)
    adapter_path = out / "adapter.safetensors"
    if ctx.is_main:
        save_adapter(adapter_path, run.adapter, _info(run, state, started))
        plot_losses(metrics_file, out / "loss.png")
    ctx.barrier()
    result = TrainResult(
        out, adapter_path, best_path, state.step, state.last_loss, state.best_valid_loss, time.perf_counter() - started
    )
    callback("end", result.__dict__)
    return result


def _logging_callback(callback: Callback, log) -> Callback:
    """Write every step record to metrics.jsonl, then pass the event on."""

    def inner(event: str, info: dict) -> None:
        if event == "step":
            log({k: v for k, v in info.items() if k != "total_steps"})
        callback(event, info)

    return inner
