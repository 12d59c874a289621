"""``--compile off|on|auto``: torch.compile of the base model's decoder blocks, for the length of a run.

Each block's ``forward`` is compiled, not the module's ``__call__``: the adapter's hooks on the
blocks (:mod:`solo_cli.engine.modeling_solo`) stay outside the compiled graphs and run as they
always do. Only the training forward runs compiled: with gradients off (validation, the loss's and
packing's one-off proofs) the blocks run eagerly, so batches of any width there never recompile.

Shapes. Training batches change width from step to step; each new width would be a new graph.
So while compiling, the trainer pads each micro-batch's width up to one of a few buckets
(:func:`bucket_widths`: powers of two from 64, then ``--max-seq-length``; packed rows all to
``--max-seq-length``), with padding that carries no loss and that no real token attends to, and
the blocks compile with static shapes: at most one graph per bucket (and per micro-batch size, which
changes only at an epoch's end). On CUDA with fixed shapes (``--packing``), the blocks compile with
``mode="reduce-overhead"``: CUDA graphs, which replay a step's kernels without launching each one.

``auto`` compiles only when the run is long enough to repay the compile: at least :data:`MARGIN`
times the break-even measured for the device kind (:data:`BREAK_EVEN_STEPS`); a device kind with no
measurement, or no compiler for torch's inductor, runs eagerly (``on`` without that compiler is refused in one line). The choice and its reason are shown
when training starts. It is not the default: the break-evens were measured with the earlier dynamic
compile (one sample each), before bucket padding, whose extra tokens ``bench/compile.py`` now counts.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..engine.blocks import find_blocks
from ..errors import UsageError, param

# Optimizer steps after which compiling has paid for itself, by device kind (one measurement each):
# cuda: solo train on E2E at batch 32 on an H200 ran 1.24x faster after a 22 s longer start, some
# 1,200 steps (bench/results/speed-cuda.md). cpu: never; on 2 cores the bucket-padded compiled step
# ran at 0.78x the eager one at 8 x 96 tokens (bench/results/compile.md: the padding to 128 costs
# more than the compiled kernels save), so auto stays eager there.
BREAK_EVEN_STEPS = {"cuda": 1200}
NEVER_PAYS = {"cpu": "bench/results/compile.md: the bucket-padded compiled step was slower than the eager one"}
MARGIN = 2.0  # auto compiles runs of at least MARGIN x the break-even: one sample each, and buckets pad
SMALLEST_BUCKET = 64


@dataclass(frozen=True)
class CompilePlan:
    """What ``--compile`` became for a run: whether the blocks compile, to which widths batches are padded, and why."""

    enabled: bool
    reason: str
    buckets: tuple[int, ...] = ()  # batch widths padded up to these (static shapes); () while compiling: dynamic shapes
    cuda_graphs: bool = False

    def pad(self, batch: dict[str, torch.Tensor], pad_id: int) -> dict[str, torch.Tensor]:
        """``batch`` padded to its bucket's width (unchanged when not compiling with buckets)."""
        if not (self.enabled and self.buckets):
            return batch
        return pad_batch(batch, bucket_width(batch["input_ids"].shape[1], self.buckets), pad_id)

    def begin_step(self) -> None:
        """Tell CUDA graphs a new training step begins: the previous step's graph outputs may be overwritten."""
        if self.enabled and self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()


EAGER = CompilePlan(False, "off")


def bucket_widths(max_seq_length: int, *, packing: bool = False) -> tuple[int, ...]:
    """The widths batches are padded up to: powers of two from 64 below ``max_seq_length``, then ``max_seq_length``
    (packed rows: ``max_seq_length`` only, so every packed batch has the same width)."""
    widths = []
    width = SMALLEST_BUCKET
    while width < max_seq_length and not packing:
        widths.append(width)
        width *= 2
    return (*widths, max_seq_length)


def bucket_width(width: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket of at least ``width``; past the largest, the next multiple of it (flattened packed rows)."""
    fits = [b for b in buckets if b >= width]
    if fits:
        return min(fits)
    return -(-width // buckets[-1]) * buckets[-1]


def pad_batch(batch: dict[str, torch.Tensor], width: int, pad_id: int) -> dict[str, torch.Tensor]:
    """A collated batch right-padded to ``width``: padding ids, no labels, masked out (padded batches) or a sequence
    of its own from position 0 (packed rows); ``loss_positions`` follow the wider rows. The loss is unchanged."""
    rows, now = batch["input_ids"].shape
    extra = width - now
    if extra <= 0:
        return batch
    padded = dict(batch)
    padded["input_ids"] = F.pad(batch["input_ids"], (0, extra), value=pad_id)
    padded["labels"] = F.pad(batch["labels"], (0, extra), value=-100)
    if "attention_mask" in batch:
        padded["attention_mask"] = F.pad(batch["attention_mask"], (0, extra), value=0)
    if "position_ids" in batch:
        tail = torch.arange(extra, dtype=batch["position_ids"].dtype).expand(rows, extra)
        padded["position_ids"] = torch.cat([batch["position_ids"], tail], dim=1)
    if "loss_positions" in batch:  # flat index b * (width - 1) + t (see collate) on rows now ``width`` wide
        positions, old = batch["loss_positions"], max(1, now - 1)
        padded["loss_positions"] = positions // old * (width - 1) + positions % old
    return padded


def compiler_ready(kind: str) -> bool:
    """Whether torch's inductor can build kernels here: a C++ compiler on the CPU, triton on CUDA."""
    if kind == "cuda":
        return importlib.util.find_spec("triton") is not None
    if kind == "cpu":
        return any(shutil.which(c) for c in (os.environ.get("CXX") or "", "g++", "c++", "clang++") if c)
    return False


def missing_compiler(kind: str, ready: bool | None = None) -> str | None:
    """What torch's inductor needs on a ``kind`` of device and does not find here, or None. ``ready``: whether it
    is found (None: :func:`compiler_ready`). Only CPUs and CUDA have known needs; other kinds are left to torch."""
    if kind not in ("cpu", "cuda") or (compiler_ready(kind) if ready is None else ready):
        return None
    return "triton (pip install triton)" if kind == "cuda" else "a C++ compiler (g++ or clang++, or one named by $CXX)"


def refuse_missing_compiler(setting: str, device, ready: bool | None = None) -> None:
    """``--compile on`` where torch's inductor lacks its compiler: one line (the first compiled step would fail deep
    inside torch). `solo train` asks before anything is written; ``auto`` stays eager instead."""
    kind = torch.device(device).type
    if setting == "on" and (missing := missing_compiler(kind, ready)):
        raise UsageError(
            f"{param('compile')} on: torch.compile on {kind} needs {missing}, which is not found here; "
            f"install it, or train with {param('compile')} off"
        )


def decide_compile(
    setting: str, device, steps: int, *, max_seq_length: int, packing: bool = False, ready: bool | None = None
) -> CompilePlan:
    """What ``--compile`` (off, on or auto) becomes for a run of ``steps`` optimizer steps on ``device``.

    ``ready`` says whether the compiler can run here (None: :func:`compiler_ready`). ``on`` without it is
    refused in one line (the first compiled step would fail deep inside torch); ``auto`` then stays eager.
    """
    kind = torch.device(device).type
    if setting == "off":
        return EAGER
    refuse_missing_compiler(setting, device, ready)
    if setting == "auto":
        break_even = BREAK_EVEN_STEPS.get(kind)
        if kind in NEVER_PAYS:
            return CompilePlan(False, f"auto: eager (compiling does not pay on {kind}; {NEVER_PAYS[kind]})")
        if break_even is None:
            return CompilePlan(False, f"auto: eager (no measured break-even of compiling on {kind})")
        if steps < MARGIN * break_even:
            return CompilePlan(
                False, f"auto: eager ({steps:,} steps; compiling repays itself after ~{break_even:,} steps on {kind})"
            )
        if missing := missing_compiler(kind, ready):
            return CompilePlan(False, f"auto: eager (compiling on {kind} needs {missing}, not found)")
    buckets = bucket_widths(max_seq_length, packing=packing)
    graphs = kind == "cuda" and packing  # packed rows are all max_seq_length wide: fixed shapes
    why = (
        f"auto: compiled ({steps:,} steps; compiling repays itself after ~{BREAK_EVEN_STEPS[kind]:,} on {kind})"
        if setting == "auto"
        else "on"
    )
    shown = "/".join(str(b) for b in buckets)
    reason = f"{why}; batch widths padded to {shown}" + ("; CUDA graphs (fixed shapes)" if graphs else "")
    return CompilePlan(True, reason, buckets, graphs)


def _training_only(eager, compiled):
    """A block ``forward`` that runs ``compiled`` when gradients are on (training), else ``eager``."""

    @functools.wraps(eager)
    def forward(*args, **kwargs):
        return (compiled if torch.is_grad_enabled() else eager)(*args, **kwargs)

    return forward


@contextlib.contextmanager
def compiled_blocks(model, plan: CompilePlan | bool):
    """Within the ``with`` block, every decoder block of ``model`` trains with a compiled ``forward``.

    ``plan`` from :func:`decide_compile`; ``True`` compiles with dynamic shapes (no buckets), ``False`` not at all.
    """
    plan = plan if isinstance(plan, CompilePlan) else CompilePlan(bool(plan), "on" if plan else "off")
    if not plan.enabled:
        yield
        return
    _, blocks = find_blocks(model)
    mode = "reduce-overhead" if plan.cuda_graphs else None
    # static shapes per bucket; dynamic without buckets, as batches change width from step to step
    dynamic = not plan.buckets
    # one graph per bucket and micro-batch size (smaller at an epoch's end), never eager for want of room
    limit = max(torch._dynamo.config.recompile_limit, 4 * len(plan.buckets))  # torch >= 2.7 (pyproject's floor)
    for block in blocks:
        block.forward = _training_only(block.forward, torch.compile(block.forward, dynamic=dynamic, mode=mode))
    try:
        with torch._dynamo.config.patch(recompile_limit=limit):
            yield
    finally:
        for block in blocks:
            del block.forward  # the instance attribute: the class's forward shows through again
