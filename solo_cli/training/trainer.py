"""The training loop. It reports through a callback and never prints.

Only adapter tensors require grad. Blocks below the lowest destination of any connection see
inputs that do not require grad, so autograd records nothing there and no backward pass runs
through them; the vocabulary projection runs only on positions that carry loss (see loss.py).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..data.packing import PackedRow, collate_packed
from ..data.row_encoding import Example
from ..engine.adapter import SoloAdapter, release_sources
from ..engine.loss import packs_flat, prove_packing
from ..engine.precision import Precision, resolve_precision
from ..errors import RuntimeFailure, SoloError, param
from .compiled import EAGER
from .config import TrainConfig
from .distributed import DistContext, model_runner, wrap
from .memory import is_out_of_memory, out_of_memory
from .objective import objective_of
from .optim import make_optimizer
from .readout import StepReadout, read_step
from .sampler import example_lengths, packed_step_batches, rank_share, step_batches
from .sharding import shard_base

Callback = Callable[[str, dict], None]


@dataclass
class StepRecord:
    step: int
    loss: float
    lr: float
    gate: float
    tokens_per_s: float
    elapsed: float
    remaining: float
    metrics: dict = field(default_factory=dict)  # the objective's own (rewards/*, logps/* of a preference loss)

    def to_dict(self) -> dict:
        values = {k: v for k, v in self.__dict__.items() if k != "metrics"} | self.metrics
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in values.items()}


@dataclass
class TrainState:
    """Where a run is: the optimizer steps done, which is also the position in the data order (one step of data a step)."""

    step: int = 0
    best_valid_loss: float | None = None
    last_loss: float | None = None
    tokens: int = 0
    elapsed: float = 0.0  # seconds of training to ``step``, over every resume (kept in checkpoints)


def _precision_of(model, device) -> Precision:
    """The precision of a model given without one: the one decision (engine/precision.py) for its weights' dtype."""
    return resolve_precision(str(next(model.parameters()).dtype).removeprefix("torch."), device)


class Interrupted(SoloError):
    """Training stopped on request (Ctrl+C or SIGTERM) after finishing a step: exit code 130."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=130)


def _diverged(step: int, what: str, lr: float) -> RuntimeFailure:
    return RuntimeFailure(
        f"training stopped at step {step}: {what}; lower {param('lr')} (now {lr:g}) or add {param('warmup')}; "
        "the last good checkpoint is kept"
    )


class _Clock:
    """Seconds of the whole run (``before``: those of the steps before a resume), and the time left at the pace of
    the steps run since the loop started."""

    def __init__(self, first_step: int, before: float = 0.0) -> None:
        self.started, self.first_step, self.before = time.perf_counter(), first_step, before

    def record(self, step: int, steps: int, loss: float, lr: float, gate: float, tokens: int, tick: float) -> StepRecord:
        now = time.perf_counter()
        per_step = (now - self.started) / (step - self.first_step)
        return StepRecord(
            step=step,
            loss=loss,
            lr=lr,
            gate=gate,
            tokens_per_s=tokens / max(1e-9, now - tick),
            elapsed=self.before + now - self.started,
            remaining=per_step * (steps - step),
        )


class Trainer:
    """Runs optimizer steps on an attached adapter and calls hooks for evaluation and saving.

    ``on_eval(state)`` and ``on_save(state)`` are supplied by the caller (run.py), which owns the
    files; the trainer owns the arithmetic and the optimizer. Setting ``stop_requested`` makes
    ``run`` raise :class:`Interrupted` after the step in progress.
    """

    def __init__(
        self,
        model,
        adapter: SoloAdapter,
        cfg: TrainConfig,
        pad_id: int,
        device,
        steps: int,
        callback: Callback | None = None,
        ctx: DistContext | None = None,
        precision: Precision | None = None,
    ):
        self.model, self.adapter, self.cfg = model, adapter, cfg
        self.pad_id, self.device, self.steps = pad_id, device, steps
        self.callback = callback or (lambda event, info: None)
        self.ctx = ctx or DistContext()
        self.optimizer, self.scheduler = make_optimizer(adapter, cfg, steps)
        # the run's one precision decision (engine/precision.py); without one, what the model's weights are
        self.precision = precision or _precision_of(model, device)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.grad_scaler)
        self.autocast = getattr(torch, self.precision.autocast) if self.precision.autocast else None
        self.sharded = self.ctx.enabled and cfg.parallel == "fsdp"
        root = shard_base(model, device, cfg.fsdp_offload) if self.sharded else None  # --parallel fsdp
        self.objective = objective_of(cfg)  # what a batch's loss is (training/objective.py)
        self.loss = wrap(model, adapter, self.objective.loss, self.ctx, device, root)
        self.on_model = model_runner(self.loss)  # fn(model, *args), through the FSDP root when the base is sharded
        self.stop_requested = False
        self.compile_plan = EAGER  # --compile's plan (compiled.py), set by the run: batch widths, CUDA graphs

    def autocast_context(self):
        """The autocast every forward of the run takes (the precision's; disabled when it has none)."""
        return torch.autocast(self.device.type, dtype=self.autocast or torch.bfloat16, enabled=bool(self.autocast))

    def _step(self, batches: list[list[Example]] | list[list[PackedRow]]) -> tuple[torch.Tensor, float, int, torch.Tensor]:
        """Forward and backward over one step's global micro-batches (``grad_accum``, fewer at an epoch's end),
        weighted by trained tokens.

        ``batches`` are whole global micro-batches (every process holds them all) and this
        process trains its slice of each; so the step's trained tokens (``total``) and tokens seen
        are counted from the examples, with no transfer and no collective. Each micro-batch's
        mean loss is scaled by its share of ``total``, times the world size that DDP's gradient
        averaging divides by, so any split over processes and micro-batches gives the gradient of
        one big batch. Returns this process's token-weighted loss sum (a device scalar, read
        later by :func:`read_step`), ``total`` and the tokens seen. With ``--packing`` the items are
        packed rows, counted the same way (a row's labels leave out each example's first token). The
        objective decides what an item weighs (trained tokens; one per preference pair) and adds the sums
        of its metrics over this process's items (an empty tensor for sft).
        """
        ctx, size, objective = self.ctx, self.cfg.batch_size, self.objective
        self.compile_plan.begin_step()
        total = max(1.0, float(sum(objective.weight(e) for b in batches for e in b)))
        seen = sum(objective.tokens(e) for b in batches for e in b)
        mine = [rank_share(b, ctx.rank, size) for b in batches]
        # under DDP the last global batch of an epoch can leave a rank with no examples; under FSDP every rank
        # must run the same forwards, so it runs the batch's first example as a stand-in, counted 0
        fed = [m or (b[:1] if self.sharded else m) for m, b in zip(mine, batches)]
        collated = [self._to_device(self._collate(b)) if b else None for b in fed]  # copied before any compute
        loss_sum = torch.zeros((), device=self.device)
        metric_sums = torch.zeros(len(objective.metric_names), device=self.device)
        for n, (batch, examples) in enumerate(zip(collated, mine)):
            count = sum(objective.weight(e) for e in examples)
            last = n == len(collated) - 1
            sync = contextlib.nullcontext() if last or not ctx.enabled else self.loss.no_sync()
            with sync, self.autocast_context():
                loss, _, *metrics = self.loss(batch, self.cfg.label_smoothing)
                self.scaler.scale(loss * (count * ctx.world_size / total)).backward()
            release_sources(self.model)  # the hidden states the hooks kept for this backward
            loss_sum = loss_sum + loss.detach().float() * count
            if metrics and count:  # a stand-in (count 0) adds nothing
                metric_sums = metric_sums + metrics[0].float()
        return loss_sum, total, seen, metric_sums

    def _collate(self, items: list[Example] | list[PackedRow]) -> dict[str, torch.Tensor]:
        """One micro-batch as tensors: padded examples, or packed rows (one flattened row for flash-attention)."""
        if not self.cfg.packing:
            return self.compile_plan.pad(self.objective.collate(items, self.pad_id), self.pad_id)
        return self.compile_plan.pad(collate_packed(items, self.pad_id, flat=packs_flat(self.model)), self.pad_id)

    def _stream(self, train, start: int):
        """The run's optimizer steps from step ``start``: whole global micro-batches of examples, or of packed rows.

        With ``--packing`` the model is first proven to keep packed examples apart, on a row of the
        first two examples (the same on every process, so all of them refuse together).
        """
        cfg, global_batch = self.cfg, self.cfg.batch_size * self.ctx.world_size
        if not cfg.packing:
            lengths = example_lengths(train) if cfg.group_by_length else None
            return step_batches(train, global_batch, cfg.seed, start, lengths=lengths, accum=cfg.grad_accum)
        probe = PackedRow.of([train[0], train[min(1, len(train) - 1)]])
        self.on_model(prove_packing, self._to_device(collate_packed([probe], self.pad_id)))
        release_sources(self.model)
        return packed_step_batches(train, global_batch, cfg.seed, cfg.max_seq_length, start, accum=cfg.grad_accum)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``batch`` on the device; to CUDA from pinned memory, so the copy does not wait for queued work."""
        if self.device.type != "cuda":
            return {k: v.to(self.device) for k, v in batch.items()}
        return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}

    def _forward_backward(self, batches: list[list[Example]], step: int) -> tuple[torch.Tensor, float, int, torch.Tensor]:
        """:meth:`_step`, stopping the run with advice when memory runs out."""
        try:
            return self._step(batches)
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            self.optimizer.zero_grad(set_to_none=True)
            raise out_of_memory(step) from None

    def _update(self) -> float:
        """Clip, take the optimizer step and advance the schedule; returns the learning rate it used."""
        optimizer = self.optimizer
        self.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(self.adapter.parameters(), self.cfg.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.scaler.step(optimizer)  # skips the step if float16 gradients overflowed
        self.scaler.update()
        self.scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return lr

    def _check(self, readout: StepReadout, total: float, step: int) -> float:
        """The step's mean loss; stops the run if it or the update is not finite, before anything is saved.

        Both are read after the update (one transfer a step, :func:`read_step`), the loss first:
        a NaN loss is reported as such even though its gradients also broke the weights. The loss
        can be finite while the update is not (a huge --lr).
        """
        loss = readout.loss_sum / total
        if not math.isfinite(loss):
            raise _diverged(step, f"the loss became {float('nan')} (diverged)", self.cfg.lr)
        if readout.broken_anywhere:
            where = readout.broken or "on another process"
            raise _diverged(step, f"the update made the adapter's weights NaN or infinite ({where}; diverged)", self.cfg.lr)
        return loss

    def _after_step(self, state: TrainState, record: StepRecord, record_stop: bool, on_eval, on_save) -> None:
        """Report, evaluate and checkpoint on their schedules, then stop if asked to."""
        cfg, steps = self.cfg, self.steps
        eval_every, save_every = cfg.intervals(steps)
        if state.step % cfg.log_every == 0 or state.step == steps:
            self.callback("step", record.to_dict() | {"total_steps": steps})
        if state.step % eval_every == 0 or state.step == steps:
            on_eval(state)
        if state.step % save_every == 0 and state.step < steps:
            on_save(state)
        stop = self.stop_requested if not self.ctx.enabled else record_stop  # under torchrun: agreed in read_step
        if stop and state.step < steps:
            raise Interrupted(f"interrupted at step {state.step} of {steps}")

    def run(self, train: list[Example], state: TrainState, on_eval, on_save) -> TrainState:
        """Train from ``state`` to the last step, updating ``state`` in place; returns it."""
        ctx = self.ctx
        # whole global micro-batches: each process trains its slice (_step) and counts tokens from all of them
        stream = self._stream(train, state.step)
        self.model.train()
        clock = _Clock(state.step, state.elapsed)
        while state.step < self.steps:
            self.adapter.set_homotopy_step(state.step)
            tick = time.perf_counter()
            batches = next(stream)  # grad_accum micro-batches, fewer at the end of an epoch
            loss_sum, total, tokens, metric_sums = self._forward_backward(batches, state.step + 1)
            lr = self._update()
            readout = read_step(self.adapter, loss_sum, ctx, self.stop_requested, metric_sums)
            loss = self._check(readout, total, state.step + 1)
            state.step += 1
            state.tokens += tokens
            state.last_loss = loss
            record = clock.record(state.step, self.steps, loss, lr, readout.gate, tokens, tick)
            record.metrics = self.objective.metrics(readout.metric_sums, total)
            state.elapsed = record.elapsed
            self._after_step(state, record, readout.stop, on_eval, on_save)
        self.model.eval()
        return state
