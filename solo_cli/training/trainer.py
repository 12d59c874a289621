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
from dataclasses import dataclass

import torch

from ..data.encode import Example, collate
from ..engine.adapter import SoloAdapter
from ..engine.loss import causal_lm_loss
from ..errors import RuntimeFailure, SoloError, param
from .config import TrainConfig
from .distributed import DistContext, wrap
from .memory import is_out_of_memory, out_of_memory
from .optim import make_optimizer
from .sampler import micro_batches

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

    def to_dict(self) -> dict:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass
class TrainState:
    """Where a run is: the optimizer step done and the position in the data order."""

    step: int = 0
    micro_batches: int = 0  # micro-batches consumed since the start, across epochs
    best_valid_loss: float | None = None
    last_loss: float | None = None
    tokens: int = 0


def mean_gate(adapter: SoloAdapter) -> float:
    values = list(adapter.gate_values().values())
    return sum(values) / max(1, len(values))


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
    """Seconds since the loop started, and the time left at the pace of the steps run so far."""

    def __init__(self, first_step: int) -> None:
        self.started, self.first_step = time.perf_counter(), first_step

    def record(self, step: int, steps: int, loss: float, lr: float, gate: float, tokens: int, tick: float) -> StepRecord:
        now = time.perf_counter()
        per_step = (now - self.started) / (step - self.first_step)
        return StepRecord(
            step=step,
            loss=loss,
            lr=lr,
            gate=gate,
            tokens_per_s=tokens / max(1e-9, now - tick),
            elapsed=now - self.started,
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
    ):
        self.model, self.adapter, self.cfg = model, adapter, cfg
        self.pad_id, self.device, self.steps = pad_id, device, steps
        self.callback = callback or (lambda event, info: None)
        self.ctx = ctx or DistContext()
        self.optimizer, self.scheduler = make_optimizer(adapter, cfg, steps)
        # float16 activations underflow in backward without loss scaling (bf16 and fp32 need none)
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.dtype == "float16")
        # looked up at call time, so tests can substitute the loss
        self.loss = wrap(model, adapter, lambda m, b, ls: causal_lm_loss(m, b, ls), self.ctx, device)
        self.stop_requested = False

    def _step(self, batches: list[list[Example]]) -> tuple[float, int]:
        """Forward and backward over ``grad_accum`` micro-batches, weighted by trained tokens.

        Each micro-batch's mean loss is scaled by its share of the trained tokens of the whole
        (global) step, times the world size that DDP's gradient averaging divides by, so any
        split over processes and micro-batches gives the gradient of one big batch. Returns the
        step's token-weighted mean loss (NaN if any micro-batch's was not finite) and the tokens seen.
        """
        ctx = self.ctx
        # under DDP the last global batch of an epoch can leave a rank with no examples
        collated = [collate(b, self.pad_id) if b else None for b in batches]
        counts = [int((c["labels"][:, 1:] != -100).sum()) if c else 0 for c in collated]
        total = max(1.0, ctx.sum([float(sum(counts))], self.device)[0])
        loss_sum, seen, finite = 0.0, 0, True
        autocast = self.device.type == "cuda" and self.cfg.dtype == "float32" and torch.cuda.is_bf16_supported()
        for n, (batch, count) in enumerate(zip(collated, counts)):
            batch = {k: v.to(self.device) for k, v in batch.items()} if batch else None
            last = n == len(collated) - 1
            sync = contextlib.nullcontext() if last or not ctx.enabled else self.loss.no_sync()
            with sync, torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                loss, _ = self.loss(batch, self.cfg.label_smoothing)
                finite = finite and bool(torch.isfinite(loss))
                self.scaler.scale(loss * (count * ctx.world_size / total)).backward()
            loss_sum += float(loss.detach()) * count
            seen += int(batch["attention_mask"].sum()) if batch else 0
        if ctx.any(not finite, self.device):
            return float("nan"), seen
        loss_sum, seen = ctx.sum([loss_sum, float(seen)], self.device)
        return loss_sum / total, int(seen)

    def _forward_backward(self, batches: list[list[Example]], step: int) -> tuple[float, int]:
        """:meth:`_step`, stopping the run with advice when memory runs out or the loss diverges."""
        try:
            loss, tokens = self._step(batches)
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            self.optimizer.zero_grad(set_to_none=True)
            raise out_of_memory(step) from None
        if not math.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            raise _diverged(step, f"the loss became {loss} (diverged)", self.cfg.lr)
        return loss, tokens

    def _update(self, step: int) -> float:
        """Clip, take the optimizer step and advance the schedule; returns the learning rate it used.

        The loss can be finite while the update is not (a huge --lr): the run stops here, before
        anything is saved.
        """
        optimizer = self.optimizer
        self.scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(self.adapter.parameters(), self.cfg.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.scaler.step(optimizer)  # skips the step if float16 gradients overflowed
        self.scaler.update()
        self.scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        broken = self._non_finite_parameter()
        if self.ctx.any(broken is not None, self.device):
            what = f"the update made the adapter's weights NaN or infinite ({broken or 'on another process'}; diverged)"
            raise _diverged(step, what, self.cfg.lr)
        return lr

    def _non_finite_parameter(self) -> str | None:
        """The name of the first adapter parameter holding NaN or inf, or None (one device sync)."""
        params = list(self.adapter.named_parameters())
        if not params or bool(torch.stack([torch.isfinite(p).all() for _, p in params]).all()):
            return None
        return next(name for name, p in params if not bool(torch.isfinite(p).all()))

    def _after_step(self, state: TrainState, record: StepRecord, on_eval, on_save) -> None:
        """Report, evaluate and checkpoint on their schedules, then stop if asked to."""
        cfg, steps = self.cfg, self.steps
        eval_every = cfg.eval_every or max(1, steps // 5)
        save_every = cfg.save_every or eval_every
        if state.step % cfg.log_every == 0 or state.step == steps:
            self.callback("step", record.to_dict() | {"total_steps": steps})
        if state.step % eval_every == 0 or state.step == steps:
            on_eval(state)
        if state.step % save_every == 0 and state.step < steps:
            on_save(state)
        if self.ctx.any(self.stop_requested, self.device) and state.step < steps:
            raise Interrupted(f"interrupted at step {state.step} of {steps}")

    def run(self, train: list[Example], state: TrainState, on_eval, on_save) -> TrainState:
        """Train from ``state`` to the last step, updating ``state`` in place; returns it."""
        cfg, ctx = self.cfg, self.ctx
        stream = micro_batches(train, cfg.batch_size, cfg.seed, state.micro_batches, ctx.rank, ctx.world_size)
        self.model.train()
        clock = _Clock(state.step)
        while state.step < self.steps:
            self.adapter.set_homotopy_step(state.step)
            tick = time.perf_counter()
            batches = [next(stream) for _ in range(cfg.grad_accum)]
            loss, tokens = self._forward_backward(batches, state.step + 1)
            lr = self._update(state.step + 1)
            state.step += 1
            state.micro_batches += cfg.grad_accum
            state.tokens += tokens
            state.last_loss = loss
            record = clock.record(state.step, self.steps, loss, lr, mean_gate(self.adapter), tokens, tick)
            self._after_step(state, record, on_eval, on_save)
        self.model.eval()
        return state
