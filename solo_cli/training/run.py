"""A training run end to end: resolve the config, load model and data, train, write the outputs.

Output folder: ``adapter.safetensors``, ``best/adapter.safetensors`` (with validation data),
``checkpoints/step-N/``, ``metrics.jsonl``, ``config.json`` and ``loss.png``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import set_seed

from .. import __version__
from ..data.encode import EncodedData, context_length, encode_rows
from ..data.rows import read_rows, resolve_data
from ..engine.adapter import AdapterConfig, AttachedAdapter, SoloAdapter, attach
from ..engine.adapter_file import AdapterInfo, save_adapter
from ..engine.blocks import Fingerprint, fingerprint
from ..engine.loss import evaluate_loss
from ..engine.models import LoadedModel, load_model
from ..engine.topology import format_connections, parse_connections
from ..errors import UsageError
from ..files import lock
from ..files.atomic import write_json, write_text
from ..outputs import describe, is_run_folder, refuse_current_folder, remove_run_outputs, run_outputs
from . import distributed
from .checkpoint import clean_staging, find_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from .config import TrainConfig
from .distributed import DistContext
from .plot import plot_losses
from .trainer import Callback, Interrupted, Trainer, TrainState, set_checkpointing, total_steps


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
    """Take ``--output`` for this run, or refuse in one line; nothing is loaded yet.

    The folder's lock (:mod:`solo_cli.lock`) is taken before anything is written and held until
    :func:`execute` ends (call :func:`solo_cli.lock.release` if the run never gets there). A folder
    holding a run is refused unless ``--resume`` (whose settings must be the run's) or
    ``--overwrite`` (which deletes only what solo wrote there, and never in the current folder or
    one above it); a folder whose solo output names hold files solo did not write is refused
    either way. Staging folders left by a killed save are tidied. Under a distributed launcher only
    rank 0 touches the folder.
    """
    out = Path(cfg.output)
    if not distributed.from_env().is_main:
        return out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output {out}: exists and is not a folder ({describe(out)}); choose another path")
    if cfg.resume is not None and not out.is_dir():
        find_checkpoint(out, cfg.resume)  # auto: nothing to resume; PATH: fails now if it is no checkpoint
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--output {out}: cannot write there ({exc.strerror}); choose a writable folder") from None
    lock.acquire(out)  # the lock's file is also the probe that the folder is writable
    try:
        present = run_outputs(out)
        if present and not is_run_folder(out):
            raise UsageError(
                f"--output {out}: holds {', '.join(present)} that are not a solo run's outputs; "
                "solo never replaces them; choose another folder"
            )
        if present and cfg.resume is None:
            if not cfg.overwrite:
                raise UsageError(
                    f"--output {out}: already holds a run ({', '.join(present)}); pass --overwrite or choose another folder"
                )
            refuse_current_folder(out, "--output")
        if present:
            clean_staging(out)
        if cfg.resume is not None:
            check_resume(cfg, out, find_checkpoint(out, cfg.resume))
        elif present:
            remove_run_outputs(out)
    except BaseException:
        lock.release(out)
        raise
    return out


# Flags that may differ when a run is resumed: they change what is logged, kept or where it runs,
# never the arithmetic of the run (every other TrainConfig field must be the run's).
RESUME_MAY_CHANGE = frozenset(
    {
        "output",
        "resume",
        "overwrite",
        "eval_every",
        "save_every",
        "keep_checkpoints",
        "log_every",
        "device",
        "grad_checkpoint",
        "trust_remote_code",
    }
)


_COMPARED_RESOLVED = ("connections", "homotopy_steps")  # compared once resolved on the model, by load_checkpoint


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(data: str) -> dict[str, str | None]:
    """sha256 of the training (and validation) file's bytes, recorded in config.json at the start of a run."""
    files = resolve_data(data)
    return {"train": _sha256(files.train), "valid": _sha256(files.valid) if files.valid else None}


def _shown(value) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _same_path(a, b) -> bool:
    return a == b or (isinstance(a, str) and isinstance(b, str) and Path(a).resolve() == Path(b).resolve())


def _run_config(out: Path, checkpoint: Path) -> dict | None:
    """config.json of the run ``checkpoint`` belongs to (that of ``out`` if it is not in a run's checkpoints/)."""
    candidates = [checkpoint.parent.parent / "config.json"] if checkpoint.parent.name == "checkpoints" else []
    for path in [*candidates, out / "config.json"]:
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError):
            continue
        if isinstance(recorded, dict) and "solo_version" in recorded:
            return recorded
    return None


def check_resume(cfg: TrainConfig, out: Path, checkpoint: Path) -> None:
    """Refuse to resume with settings other than the run's (its config.json), listing each difference.

    Compared: every TrainConfig field but those in :data:`RESUME_MAY_CHANGE`, and the sha256 of
    the data files. The model's fingerprint and the adapter's shape (connections and homotopy
    steps as resolved on the model, so ``chain`` and its spelled-out plan are the same) are
    compared with the checkpoint itself when it is loaded (:func:`solo_cli.checkpoint.load_checkpoint`).
    """
    recorded = _run_config(out, checkpoint)
    if recorded is None:
        return
    differences = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in RESUME_MAY_CHANGE or f.name in _COMPARED_RESOLVED or f.name not in recorded:
            continue
        old, new = recorded[f.name], getattr(cfg, f.name)
        same = _same_path(old, new) if f.name in ("model", "data") else old == new
        if not same:
            differences.append(f"--{f.name.replace('_', '-')} {_shown(old)} -> {_shown(new)}")
    sha = recorded.get("data_sha256")
    if isinstance(sha, dict) and cfg.data:
        files, now = resolve_data(cfg.data), data_fingerprint(cfg.data)
        for part, path in (("train", files.train), ("valid", files.valid)):
            if sha.get(part) != now[part]:
                old, new = (str(v)[:12] if v else "none" for v in (sha.get(part), now[part]))
                differences.append(f"--data {path or part} contents sha256 {old} -> {new}")
    if differences:
        raise UsageError(
            f"--resume {cfg.resume}: {checkpoint} belongs to a run started with other settings: "
            f"{', '.join(differences)}; resume with the run's flags (its config.json), or start a new run in another --output"
        )


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
    The folder's lock is released when this returns or raises.
    """
    try:
        return _execute(run, callback)
    finally:
        if run.ctx.is_main:
            lock.release(run.cfg.output)


def _execute(run: PreparedRun, callback: Callback | None) -> TrainResult:
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
        state = load_checkpoint(folder, trainer, run.fingerprint)
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
            "data_sha256": data_fingerprint(cfg.data),  # a resume refuses other data
        }
        write_json(out / "config.json", resolved)

    def on_eval(st: TrainState) -> None:
        if not run.valid:
            return
        mine = run.valid.examples[ctx.rank :: ctx.world_size]  # each process scores its share; reduce sums them
        loss = evaluate_loss(model, mine, cfg.batch_size, tokenizer.pad_token_id, run.device, lambda v: ctx.sum(v, run.device))
        log({"step": st.step, "valid_loss": round(loss, 6)})
        improved = st.best_valid_loss is None or loss < st.best_valid_loss
        if improved:
            st.best_valid_loss = loss
            if ctx.is_main:
                save_adapter(best_path, run.adapter, _info(run, st, started))
        callback("eval", {"step": st.step, "valid_loss": loss, "best": improved})

    saved: dict[int, Path] = {}  # the step last checkpointed, so an interrupt right after it does not save it again

    def on_save(st: TrainState) -> Path:
        folder = out / "checkpoints" / f"step-{st.step}"
        if ctx.is_main:
            save_checkpoint(folder, trainer, st, _info(run, st, started))
            prune_checkpoints(out, cfg.keep_checkpoints)
            callback("save", {"step": st.step, "path": str(folder)})
        ctx.barrier()  # no rank runs ahead of a checkpoint it may be asked to resume from
        saved.clear()
        saved[st.step] = folder
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
        folder = saved.get(state.step) or on_save(state)
        raise Interrupted(f"{exc.text}; checkpoint saved in {folder}") from None
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
