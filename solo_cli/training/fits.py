"""Whether a run fits the device's free memory, decided from the model's config before anything loads.

The estimate is :func:`solo_cli.engine.memory_estimate.train_memory`, the one ``solo inspect`` shows. Free
memory is CUDA's ``mem_get_info`` or, on a CPU, ``MemAvailable`` from /proc/meminfo (shared by every process
of the run on this machine); elsewhere (MPS, no /proc) nothing is checked. An estimate can be wrong (an
architecture it traces roughly, an allocator that packs better), so ``SOLO_MEMORY_CHECK=off`` skips the
check: an environment variable rather than a flag, because a flag would be a TrainConfig field, recorded in
config.json and compared on ``--resume``, while this changes nothing about the run.
"""

from __future__ import annotations

import os

import torch

from ..engine.precision import Precision
from ..errors import UsageError, param
from .config import TrainConfig
from .distributed import DistContext

SKIP_VARIABLE = "SOLO_MEMORY_CHECK"


def free_bytes(device: torch.device) -> int | None:
    """Memory free for this run on ``device`` now, or None where it cannot be read."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for row in f:
                    if row.startswith("MemAvailable:"):
                        return int(row.split()[1]) * 1024
        except OSError:
            return None
    return None


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def _estimate(cfg: TrainConfig, config, precision: Precision, ctx: DistContext):
    from ..engine.memory_estimate import train_memory

    return train_memory(
        config,
        method="solo",
        connections=cfg.connections,
        rank=cfg.rank,
        quantize=precision.quantize if precision.quantize in ("nf4", "fp4", "int8", "torchao-int8") else "none",
        dtype=precision.dtype,
        batch_size=cfg.batch_size,
        seq_len=cfg.max_seq_length,
        world_size=ctx.world_size,
        parallel=getattr(cfg, "parallel", "ddp"),
        grad_checkpoint=cfg.grad_checkpoint,
        trust_remote_code=cfg.trust_remote_code,
        offload=bool(getattr(cfg, "fsdp_offload", False)),
    )


def check_fits(cfg: TrainConfig, precision: Precision, device: torch.device, ctx: DistContext) -> None:
    """Refuse, in one line with the numbers and the flags that lower them, a run the device cannot hold."""
    if os.environ.get(SKIP_VARIABLE, "").lower() in ("off", "0", "no", "false"):
        return
    free = free_bytes(device)
    if free is None:
        return
    from ..engine.models import load_config

    config = load_config(cfg.model, cfg.revision, cfg.trust_remote_code)
    if cfg.rank > int(getattr(config, "hidden_size", cfg.rank)):
        return  # refused once the model loads, with the rank's own message
    try:
        estimate = _estimate(cfg, config, precision, ctx)
    except UsageError:
        raise  # a plan that does not fit the model: the same line the run would end in
    except Exception:  # an architecture the estimate cannot build: train as before, unchecked
        return
    sharing = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if device.type == "cpu" else 1  # processes on this CPU's memory
    needed = estimate.total * max(1, sharing)
    if needed <= free:
        return
    parallel = getattr(cfg, "parallel", "ddp")
    lower = [f"{param('batch_size')} (now {cfg.batch_size})", f"{param('max_seq_length')} (now {cfg.max_seq_length})"]
    if precision.quantize == "none":
        lower.insert(0, f"{param('quantize')} nf4")
    if not cfg.grad_checkpoint:
        lower.append(param("grad_checkpoint"))
    if parallel != "fsdp":
        lower.append(f"{param('parallel')} fsdp under torchrun")
    raise UsageError(
        f"this run needs about {_gib(needed)} of memory on {device.type} and {_gib(free)} is free; lower it with "
        f"{', '.join(lower)}, or set {SKIP_VARIABLE}=off if you know it fits"
    )
