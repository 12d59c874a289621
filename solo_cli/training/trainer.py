"""The training loop. It reports through a callback and never prints.

Only adapter tensors require grad. Blocks below the lowest destination of any connection see
inputs that do not require grad, so autograd records nothing there and no backward pass runs
through them; the vocabulary projection runs only on positions that carry loss (see loss.py).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from transformers import get_scheduler

from ..data.encode import Example, collate, epoch_order
from ..engine.adapter import SoloAdapter
from ..engine.loss import causal_lm_loss
from ..errors import RuntimeFailure, SoloError
from .config import TrainConfig
from .distributed import DistContext, wrap

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


def total_steps(cfg: TrainConfig, num_examples: int, world_size: int = 1) -> int:
    """``--max-steps`` if given, else the optimizer steps in ``--epochs`` passes over the data."""
    if cfg.max_steps:
        return cfg.max_steps
    micro_per_epoch = math.ceil(num_examples / (cfg.batch_size * world_size))
    return max(1, math.ceil(cfg.epochs * micro_per_epoch / cfg.grad_accum))


def micro_batches(
    examples: list[Example], batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1
) -> Iterator[list[Example]]:
    """Endless stream of micro-batches, reshuffled each epoch, starting at micro-batch ``start``.

    With ``world_size`` processes, micro-batch m of the global stream (``batch_size x world_size``
    examples, exactly what one process with that batch would take) is split, and this rank gets
    its ``batch_size`` slice.
    """
    global_batch = batch_size * world_size
    per_epoch = math.ceil(len(examples) / global_batch)
    index = start
    while True:
        epoch, within = divmod(index, per_epoch)
        order = epoch_order(len(examples), seed, epoch)
        chunk = order[within * global_batch : (within + 1) * global_batch][rank * batch_size : (rank + 1) * batch_size]
        yield [examples[i] for i in chunk]
        index += 1


def make_optimizer(adapter: SoloAdapter, cfg: TrainConfig, steps: int):
    """AdamW over the adapter's A and B, with the configured learning-rate schedule."""
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    name = "constant_with_warmup" if cfg.schedule == "constant" else cfg.schedule
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup, num_training_steps=steps)
    return optimizer, scheduler


def set_checkpointing(model, enabled: bool) -> None:
    """Turn activation checkpointing on or off, non-reentrant so the adapter's hooks recompute exactly."""
    if enabled:
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
        disable()


def mean_gate(adapter: SoloAdapter) -> float:
    values = list(adapter.gate_values().values())
    return sum(values) / max(1, len(values))


class Interrupted(SoloError):
    """Training stopped on request (Ctrl+C or SIGTERM) after finishing a step: exit code 130."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=130)


OOM_ADVICE = (
    "ran out of memory{where}; lower --batch-size (and raise --grad-accum to keep the effective batch), "
    "lower --max-seq-length, or add --grad-checkpoint"
)


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


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
        """One optimizer step over ``grad_accum`` micro-batches, weighted by trained tokens.

        Each micro-batch's mean loss is scaled by its share of the trained tokens of the whole
        (global) step, times the world size that DDP's gradient averaging divides by, so any
        split over processes and micro-batches gives the gradient of one big batch.
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

    def _non_finite_parameter(self) -> str | None:
        """The name of the first adapter parameter holding NaN or inf, or None (one device sync)."""
        params = list(self.adapter.named_parameters())
        if not params or bool(torch.stack([torch.isfinite(p).all() for _, p in params]).all()):
            return None
        return next(name for name, p in params if not bool(torch.isfinite(p).all()))

    def run(self, train: list[Example], state: TrainState, on_eval, on_save) -> TrainState:
        cfg, steps = self.cfg, self.steps
        optimizer, scheduler = self.optimizer, self.scheduler
        eval_every = cfg.eval_every or max(1, steps // 5)
        save_every = cfg.save_every or eval_every
        stream = micro_batches(
            train, cfg.batch_size, cfg.seed, start=state.micro_batches, rank=self.ctx.rank, world_size=self.ctx.world_size
        )
        self.model.train()
        started = time.perf_counter()
        first_step = state.step
        while state.step < steps:
            self.adapter.set_homotopy_step(state.step)
            tick = time.perf_counter()
            batches = [next(stream) for _ in range(cfg.grad_accum)]
            try:
                loss, tokens = self._step(batches)
            except (RuntimeError, MemoryError) as exc:
                if not _is_oom(exc):
                    raise
                optimizer.zero_grad(set_to_none=True)
                raise RuntimeFailure(OOM_ADVICE.format(where=f" at step {state.step + 1}")) from None
            if not math.isfinite(loss):
                optimizer.zero_grad(set_to_none=True)
                raise RuntimeFailure(
                    f"training stopped at step {state.step + 1}: the loss became {loss} (diverged); "
                    f"lower --lr (now {cfg.lr:g}) or add --warmup; the last good checkpoint is kept"
                )
            self.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(self.adapter.parameters(), cfg.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            self.scaler.step(optimizer)  # skips the step if float16 gradients overflowed
            self.scaler.update()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            # the loss can be finite while the update is not (a huge --lr): stop before anything is saved
            broken = self._non_finite_parameter()
            if self.ctx.any(broken is not None, self.device):
                raise RuntimeFailure(
                    f"training stopped at step {state.step + 1}: the update made the adapter's weights NaN or "
                    f"infinite ({broken or 'on another process'}; diverged); lower --lr (now {cfg.lr:g}) or add --warmup; "
                    "the last good checkpoint is kept"
                )
            state.step += 1
            state.micro_batches += cfg.grad_accum
            state.tokens += tokens
            state.last_loss = loss
            now = time.perf_counter()
            per_step = (now - started) / (state.step - first_step)
            record = StepRecord(
                step=state.step,
                loss=loss,
                lr=lr,
                gate=mean_gate(self.adapter),
                tokens_per_s=tokens / max(1e-9, now - tick),
                elapsed=now - started,
                remaining=per_step * (steps - state.step),
            )
            if state.step % cfg.log_every == 0 or state.step == steps:
                self.callback("step", record.to_dict() | {"total_steps": steps})
            if state.step % eval_every == 0 or state.step == steps:
                on_eval(state)
            if state.step % save_every == 0 and state.step < steps:
                on_save(state)
            if self.ctx.any(self.stop_requested, self.device) and state.step < steps:
                raise Interrupted(f"interrupted at step {state.step} of {steps}")
        self.model.eval()
        return state
