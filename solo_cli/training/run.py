"""A training run end to end: resolve the config, load model and data, train, write the outputs.

The files written are the run folder's (:class:`~solo_cli.training.run_folder.RunFolder`): the adapter,
``best/`` (with validation data), ``checkpoints/step-N/``, ``metrics.jsonl``, ``config.json`` and ``loss.png``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from .. import __version__
from ..engine.adapter import SoloAdapter, attach
from ..engine.adapter_file import AdapterInfo
from ..engine.precision import resolve_precision
from ..engine.quantization import count_params
from ..engine.topology import format_connections
from ..errors import UsageError, param
from ..files import lock
from ..files.outputs import is_run_folder, refuse_current_folder, remove_run_outputs, run_outputs, what_is_at
from . import distributed
from .checkpoint import clean_staging, find_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from .compiled import compiled_blocks, decide_compile
from .config import TrainConfig
from .memory import activation_checkpointing
from .objective import objective_summary
from .prepared import PreparedRun, prepare, resolve_device  # noqa: F401 (prepare: re-exported, as before)
from .reference import attach_references
from .resume import check_resume, check_run, data_sha256, refuse_finished
from .run_folder import RunFolder
from .trackers import TENSORBOARD_DIR, NoTracker, open_tracker, tracked_values
from .trainer import Callback, Interrupted, Trainer, TrainState


def param_summary(model, adapter: SoloAdapter) -> dict:
    """Trainable (adapter) and total parameter counts, as PEFT's print_trainable_parameters has them."""
    trainable = adapter.num_parameters()
    total = count_params(model) + trainable  # a 4-bit weight counts its weights, not its packed bytes
    return {"trainable": trainable, "total": total, "percent": 100.0 * trainable / total}


def check_output(cfg: TrainConfig, *, replace: bool = True) -> Path:
    """Take ``--output`` for this run, or refuse in one line; nothing is loaded yet.

    The folder's lock (:mod:`solo_cli.files.lock`) is taken before anything is written and held until
    :func:`execute` ends (call :func:`solo_cli.files.lock.release` if the run never gets there). A folder
    holding a run is refused unless ``--resume`` continues that run (its settings must be the run's) or
    ``--overwrite`` replaces it (deleting only what solo wrote there, and never in the current folder or
    one above it); ``--resume PATH`` of another run's checkpoint replaces it too, so it needs
    ``--overwrite``. A folder whose solo output names hold files solo did not write is refused
    either way. Staging folders left by a killed save are tidied. Under a distributed launcher only
    rank 0 touches the folder; ``--resume auto`` of a finished run raises ``RunComplete`` and touches nothing.

    ``replace=False`` leaves the run that ``--overwrite`` replaces in place: call :func:`replace_output`
    once the new run's model and data have loaded (:func:`prepare`), so that a bad row or a mistyped
    ``--model`` loses nothing.
    """
    out, output = Path(cfg.output), param("output")
    if not distributed.from_env().is_main:
        if cfg.resume == "auto" and out.is_dir():  # as rank 0 finds it (under the lock), so that every process ends
            refuse_finished(cfg, out, resolve_precision(cfg.dtype, resolve_device(cfg.device)).dtype)
        return out
    if out.exists() and not out.is_dir():
        raise UsageError(f"{output} {out}: exists and is not a folder ({what_is_at(out)}); choose another path")
    if cfg.resume is not None and not out.is_dir():
        find_checkpoint(out, cfg.resume)  # auto: nothing to resume; PATH: fails now if it is no checkpoint
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{output} {out}: cannot write there ({exc.strerror}); choose a writable folder") from None
    lock.acquire(out, output)  # the lock's file is also the probe that the folder is writable
    try:
        _take_folder(cfg, out)
        if replace:
            replace_output(cfg)
    except BaseException:
        lock.release(out)
        raise
    return out


def _continues_another_run(cfg: TrainConfig, out: Path) -> bool:
    """``--resume PATH`` of a checkpoint outside ``out``: the run in ``out`` (if any) is not the one continued."""
    if cfg.resume in (None, "auto"):
        return False
    resolved = Path(cfg.resume).resolve()
    return resolved != out.resolve() and out.resolve() not in resolved.parents


def _take_folder(cfg: TrainConfig, out: Path) -> None:
    """Holding the lock: refuse a folder solo may not write in, or a run it may not replace; check the resume.

    Nothing is deleted here (:func:`replace_output` does that once everything has been checked).
    """
    output, present = param("output"), run_outputs(out)
    if present and not is_run_folder(out):
        raise UsageError(
            f"{output} {out}: holds {', '.join(present)} that are not a solo run's outputs; "
            "solo never replaces them; choose another folder"
        )
    elsewhere = _continues_another_run(cfg, out)
    if cfg.resume is not None and cfg.overwrite and not elsewhere:
        raise UsageError(
            f"{param('resume')} {cfg.resume} and {param('overwrite')} contradict each other: "
            "resume continues the run, overwrite replaces it"
        )
    if present and (cfg.resume is None or elsewhere):
        if not cfg.overwrite:
            because = f"; {param('resume')} {cfg.resume} is another run's checkpoint and would replace it" if elsewhere else ""
            raise UsageError(
                f"{output} {out}: already holds a run ({', '.join(present)}){because}; "
                f"pass {param('overwrite')} or choose another folder"
            )
        refuse_current_folder(out, output)
    dtype = resolve_precision(cfg.dtype, resolve_device(cfg.device)).dtype if cfg.resume is not None else None
    if cfg.resume == "auto":
        refuse_finished(cfg, out, dtype)  # holding the lock, before anything in the folder is tidied
    if present:
        clean_staging(out)
    if cfg.report_to == "tensorboard":
        _probe_tensorboard(out)
    if cfg.resume is not None:
        # another run's checkpoint is compared with its own run, never with the run it replaces here
        check_resume(cfg, Path(cfg.resume) if elsewhere else out, find_checkpoint(out, cfg.resume), dtype)


def _probe_tensorboard(out: Path) -> None:
    """``--report-to tensorboard`` writes into ``out/tensorboard/``: refuse now if that folder cannot be written."""
    folder = out / TENSORBOARD_DIR
    if not folder.is_dir():
        return  # made by the writer, in ``out``, which the lock has shown writable
    try:
        fd, probe = tempfile.mkstemp(prefix=".solo-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(
            f"{param('output')} {out}: cannot write in {folder} ({exc.strerror or exc}), where "
            f"{param('report_to')} tensorboard logs; make it writable, or choose another {param('output')}"
        ) from None


def replace_output(cfg: TrainConfig) -> None:
    """Delete the run ``--overwrite`` replaces in ``--output`` (only what solo wrote there), holding the lock
    :func:`check_output` took. Nothing to do for a new folder or a run that is continued."""
    out = Path(cfg.output)
    if not distributed.from_env().is_main or not cfg.overwrite or not run_outputs(out):
        return
    if cfg.resume is not None and not _continues_another_run(cfg, out):
        return
    try:
        remove_run_outputs(out)
    except OSError as exc:
        raise UsageError(
            f"{param('output')} {out}: cannot replace the run there ({exc.strerror or exc}: {exc.filename}); "
            f"make the folder writable, or choose another {param('output')}"
        ) from None


@dataclass
class TrainResult:
    output: Path
    adapter_path: Path
    best_path: Path | None
    steps: int
    final_loss: float | None
    best_valid_loss: float | None
    seconds: float


def _resolved_config(run: PreparedRun) -> dict:
    """config.json: the run's settings, what they resolved to on this model, and the data's sha256."""
    return run.cfg.to_dict() | {
        "connections_resolved": format_connections(run.adapter.config.connections),
        "homotopy_steps_resolved": run.adapter.config.homotopy_steps,
        "total_steps": run.steps,
        "trainable_params": run.adapter.num_parameters(),
        "dtype_resolved": run.loaded.precision.dtype,  # what --dtype (auto) became on this hardware, and why
        "dtype_reason": run.loaded.precision.reason,
        "precision": run.loaded.precision.to_dict(),
        "solo_version": __version__,
        "data_sha256": run.data_sha256 or data_sha256(run.cfg),  # a resume refuses other data
        "run_shape": run.shape.to_dict() if run.shape else None,  # a resume refuses another shape
        **(run.base or {}),  # base_commit, weights_digest: a resume refuses other base weights
    }


def _info(run: PreparedRun, state: TrainState, started: float) -> AdapterInfo:
    """The adapter file's header: the adapter, its base model and a summary of the training so far."""
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
        "dtype": run.loaded.precision.dtype,  # the base's dtype as trained (--dtype auto resolved)
        "dtype_reason": run.loaded.precision.reason,
        "quantize": run.loaded.precision.quantize,  # the base's quantization as trained (none, nf4, ..., gptq)
        "data": str(cfg.data),
        "train_on_prompt": cfg.train_on_prompt,
        **objective_summary(cfg),  # objective, beta, init_adapter: what the model card says the adapter was tuned for
        "seconds": round(time.perf_counter() - started, 2),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return AdapterInfo(
        config=run.adapter.config,
        fingerprint=run.arch_fingerprint,
        base_model=run.loaded.name,
        base_revision=run.loaded.revision,
        data_format=run.train.fmt,
        chat_template=run.train.chat_template,
        training=training,
    )


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


def _ignore(event: str, info: dict) -> None:
    pass


class _Execution:
    """One call of :func:`execute`: the trainer, and the hooks through which the run reaches its folder."""

    def __init__(self, run: PreparedRun, callback: Callback | None) -> None:
        self.run, self.ctx = run, run.ctx
        self.callback = callback if (callback and run.ctx.is_main) else _ignore  # only rank 0 reports
        self.folder = RunFolder(run.cfg.output, writes=run.ctx.is_main)
        self.started = time.perf_counter()
        self.last_checkpoint: tuple[int, Path] | None = None  # so an interrupt right after a save does not save again
        self.tracker = NoTracker()  # --report-to: opened by track(), closed by execute()
        pad_id = run.loaded.tokenizer.pad_token_id
        self.trainer = Trainer(
            run.loaded.model, run.adapter, run.cfg, pad_id, run.device, run.steps, self.report, run.ctx, run.loaded.precision
        )
        self.record = _resolved_config(run)  # config.json, and recorded in every checkpoint

    def report(self, event: str, info: dict) -> None:
        """The trainer's callback: every step record goes to metrics.jsonl, then on to the caller."""
        if event == "step":
            record = {k: v for k, v in info.items() if k != "total_steps"}
            self.folder.log(record)
            self.tracker.log(tracked_values(record), record["step"])
        self.callback(event, info)

    def begin(self) -> TrainState:
        """The state to train from: the checkpoint's with ``--resume``; else a fresh one, with config.json written."""
        run, cfg = self.run, self.run.cfg
        if cfg.resume is None:
            if self.folder.writes:
                self.folder.write_config(self.record)
            return TrainState()
        checkpoint = find_checkpoint(self.folder.root, cfg.resume)
        if run.shape is not None:
            check_run(checkpoint, self.folder.root, run.shape, run.base or {}, cfg.model)
        state = load_checkpoint(checkpoint, self.trainer, run.arch_fingerprint, run.shape)
        self.started -= state.elapsed  # the run's time counts the steps trained before the resume
        self.folder.truncate_metrics(state.step)
        self.callback("resume", {"step": state.step, "path": str(checkpoint)})
        return state

    def track(self, state: TrainState) -> None:
        """Open the ``--report-to`` tracker (rank 0 only), continuing from ``state``'s step."""
        run = self.run
        self.tracker = open_tracker(run.cfg.report_to, self.folder.root, run.cfg.to_dict(), run.ctx.is_main, state.step)

    def evaluate(self, state: TrainState) -> None:
        """The trainer's ``on_eval``: score the validation data, keeping the best adapter in best/."""
        run, ctx = self.run, self.ctx
        if not run.valid:
            return
        pad_id, trainer = run.loaded.tokenizer.pad_token_id, self.trainer
        values = trainer.objective.validate(  # the loss, and a preference objective's metrics (objective.py)
            trainer.on_model, run.valid.examples, run.cfg.batch_size, pad_id, run.device, ctx,
            trainer.autocast_context(), trainer.sharded,
        )  # fmt: skip
        loss, metrics = values.pop("loss"), {f"valid_{k}": v for k, v in values.items()}
        self.folder.log({"step": state.step, "valid_loss": round(loss, 6)} | {k: round(v, 6) for k, v in metrics.items()})
        self.tracker.log(tracked_values({"valid_loss": loss} | metrics), state.step)
        improved = state.best_valid_loss is None or loss < state.best_valid_loss
        if improved:
            state.best_valid_loss = loss
            self.folder.save_best(run.adapter, _info(run, state, self.started))
        self.callback("eval", {"step": state.step, "valid_loss": loss, "best": improved} | metrics)

    def checkpoint(self, state: TrainState) -> Path:
        """The trainer's ``on_save``: write checkpoints/step-N and keep only the newest ``keep_checkpoints``."""
        folder = self.folder.checkpoint(state.step)
        if self.folder.writes:
            save_checkpoint(folder, self.trainer, state, _info(self.run, state, self.started), self.record)
            prune_checkpoints(self.folder.root, self.run.cfg.keep_checkpoints)
            self.callback("save", {"step": state.step, "path": str(folder)})
        self.ctx.barrier()  # no rank runs ahead of a checkpoint it may be asked to resume from
        self.last_checkpoint = (state.step, folder)
        return folder

    def train(self, state: TrainState) -> None:
        """Run the trainer with the adapter attached; on an interrupt, checkpoint and say where."""
        run, model, cfg = self.run, self.run.loaded.model, self.run.cfg
        # --compile auto: worth it for the steps left to run; the trainer pads batches to the plan's widths
        left, width = run.steps - state.step, cfg.max_seq_length
        plan = decide_compile(cfg.compile, run.device, left, max_seq_length=width, packing=cfg.packing)
        self.trainer.compile_plan = plan
        with activation_checkpointing(model, cfg.grad_checkpoint), compiled_blocks(model, plan):
            attach_references(run, self.trainer, partial(self.callback, "reference"))  # --objective dpo, once (reference.py)
            handle = attach(model, run.adapter)
            run.adapter.to(run.device)  # a base offloaded to the CPU (--fsdp-offload) says its device is the CPU
            try:
                self.callback("start", self._start_info(state) | {"compile_reason": plan.reason})
                with _stop_on_signals(self.trainer):
                    self.trainer.run(run.train.examples, state, self.evaluate, self.checkpoint)
            except Interrupted as exc:
                step, folder = self.last_checkpoint or (None, None)
                folder = folder if step == state.step else self.checkpoint(state)
                raise Interrupted(f"{exc.text}; checkpoint saved in {folder}") from None
            finally:
                handle.detach()

    def _start_info(self, state: TrainState) -> dict:
        run = self.run
        return param_summary(run.loaded.model, run.adapter) | {
            "total_steps": run.steps,
            "examples": len(run.train.examples),
            "connections": format_connections(run.adapter.config.connections),
            "start_step": state.step,
            "dtype_reason": run.loaded.precision.reason,  # shown once: which dtype --dtype became, and why
            "dtype_exactness": run.loaded.precision.exactness(),  # what bf16/float16 gives up (None in float32)
        }

    def finish(self, state: TrainState) -> TrainResult:
        """Write the final adapter, its model card and the loss plot; every rank then returns the same result."""
        run, folder = self.run, self.folder
        info = _info(run, state, self.started)
        folder.save_adapter(run.adapter, info)
        folder.write_card(info)
        folder.plot_losses()
        self.ctx.barrier()
        best = folder.best if run.valid else None
        seconds = time.perf_counter() - self.started
        result = TrainResult(folder.root, folder.adapter, best, state.step, state.last_loss, state.best_valid_loss, seconds)
        self.callback("end", result.__dict__)
        return result


def execute(run: PreparedRun, callback: Callback | None = None) -> TrainResult:
    """Train ``run``'s adapter and write every output. The folder must have passed ``check_output``.

    Raises :class:`Interrupted` (exit 130) after checkpointing when SIGINT or SIGTERM arrives.
    The folder's lock is released, and the ``--report-to`` tracker closed, when this returns or raises.
    """
    execution = None
    try:
        execution = _Execution(run, callback)
        state = execution.begin()
        execution.track(state)
        execution.train(state)
        return execution.finish(state)
    finally:
        if execution is not None:
            execution.tracker.close()
        if run.ctx.is_main:
            lock.release(run.cfg.output)
