"""Data parallelism over torch.distributed, for `torchrun --nproc_per_node N -m solo_cli train ...`.

Any launcher that sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT works. Each
process takes ``--batch-size`` examples of every global batch of ``--batch-size x N``, in the
order one process with that batch would see them; gradients are averaged by DistributedDataParallel
over the adapter (the frozen base is not wrapped), with the loss scaled so that the result is
the token-weighted mean over the whole global batch. gloo on CPU, nccl on CUDA. With
``--parallel fsdp`` the frozen base is sharded across the processes too (:mod:`.sharding`).
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from ..errors import RuntimeFailure, UsageError


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float], device) -> list[float]:
        """Sum floats over all ranks (identity in a single process)."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def any(self, flag: bool, device) -> bool:
        """True on every rank if it is true on any rank (for agreeing to stop)."""
        return bool(self.sum([1.0 if flag else 0.0], device)[0] > 0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def from_env() -> DistContext:
    """The process's place in a launched group; a single process when WORLD_SIZE is unset or 1."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UsageError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)") from None
    return DistContext(rank, world, local)


def init(ctx: DistContext, device: torch.device) -> None:
    """Join the process group: nccl on CUDA, gloo otherwise. A rank that never arrives times out."""
    if not ctx.enabled or dist.is_initialized():
        return
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise UsageError(f"WORLD_SIZE={ctx.world_size} but {', '.join(missing)} is not set; launch with torchrun")
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = timedelta(seconds=float(os.environ.get("SOLO_DIST_TIMEOUT", "600")))
    try:
        dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world_size, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - any failure to join is reported as one line
        raise RuntimeFailure(f"rank {ctx.rank}: cannot join the process group ({exc})") from None


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class LossModule(nn.Module):
    """What DistributedDataParallel wraps: the adapter's parameters, with the frozen model beside them.

    The base model is deliberately not a submodule, so DDP neither broadcasts nor synchronises it.
    ``on_model(fn, *args)`` runs ``fn(model, *args)``: through the FSDP root when the base is sharded
    (:class:`.sharding.ShardedBase`, which gathers its weights), else directly.
    """

    def __init__(self, model: nn.Module, adapter: nn.Module, loss_fn, on_model=None) -> None:
        super().__init__()
        self.adapter = adapter
        object.__setattr__(self, "lm", model)
        object.__setattr__(self, "loss_fn", loss_fn)
        object.__setattr__(self, "on_model", on_model or (lambda fn, *args: fn(model, *args)))

    def forward(self, batch: dict | None, label_smoothing: float = 0.0):
        if batch is None:
            # This rank's share of an uneven last global batch is empty. DDP still needs a backward
            # from every rank to all-reduce over: a zero that depends on every adapter parameter.
            return sum(p.sum() for p in self.adapter.parameters()) * 0.0, 0
        return self.on_model(self.loss_fn, batch, label_smoothing)


def wrap(model: nn.Module, adapter: nn.Module, loss_fn, ctx: DistContext, device: torch.device, root: nn.Module | None = None):
    """A callable ``(batch, label_smoothing) -> (loss, count)``, data-parallel when ``ctx`` is.

    ``root``: the FSDP root of a base sharded by :func:`.sharding.shard_base`, which every forward goes
    through (:attr:`LossModule.on_model`; :func:`model_runner`)."""
    if not ctx.enabled:
        return LossModule(model, adapter, loss_fn)
    from torch.nn.parallel import DistributedDataParallel

    adapter.to(device)  # DDP (nccl) broadcasts the adapter from rank 0 where it will train
    # under FSDP the adapter's all-reduces get a process group of their own, apart from FSDP's gathers
    group = dist.new_group(backend=dist.get_backend()) if root is not None else None
    module = LossModule(model, adapter, loss_fn, root)
    ids = [device.index or 0] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, process_group=group, **_no_buffer_syncs(DistributedDataParallel))


def _no_buffer_syncs(ddp: type) -> dict:
    """DDP's keyword for not broadcasting buffers before each forward: every rank sets the schedule gate (the
    adapter's one buffer) itself. ``forward_sync_buffers`` where torch has it (it deprecates ``broadcast_buffers``,
    with a FutureWarning on every rank); ``broadcast_buffers`` in the torch releases before it."""
    if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def model_runner(loss):
    """``fn(model, *args)`` runner of a :func:`wrap` result: what runs the base outside the loss (validation, proofs)."""
    return getattr(loss, "module", loss).on_model
