"""Whether a run fits the device's free memory, decided from the model's config before anything loads.

The estimate is :func:`solo_cli.engine.memory_estimate.train_memory`, the one ``solo inspect`` shows, under
the run's autocast. Free memory is CUDA's ``mem_get_info`` or, on a CPU, ``MemAvailable`` from /proc/meminfo
(shared by every process of the run on this machine); elsewhere (MPS, no /proc) nothing is checked.

Two peaks are checked: training's, and loading's. Every process loads the whole base before FSDP shards it
(``--parallel fsdp`` loads an unquantized base in CPU memory and moves only its shards to the GPU; a 4-bit base
is quantized on the GPU, whole), and an unquantized base passes through CPU memory on its way to a GPU, so the
host must hold one whole base per process on this machine. On CUDA the estimate (the tensors' bytes) gets a
margin for what the caching allocator reserves beyond them and for the libraries' workspaces.

An estimate can be wrong (an architecture it traces roughly, an allocator that packs better), so
``SOLO_MEMORY_CHECK=off`` skips the check: an environment variable rather than a flag, because a flag would be
a TrainConfig field, recorded in config.json and compared on ``--resume``, while this changes nothing about
the run.
"""

from __future__ import annotations

import os

import torch

from ..engine.precision import Precision
from ..engine.quantization import QUANTIZE_CHOICES
from ..errors import UsageError, param
from .config import TrainConfig
from .distributed import DistContext
from .sharding import load_device

SKIP_VARIABLE = "SOLO_MEMORY_CHECK"
# CUDA's caching allocator reserves more than the tensors hold (sizes rounded up to 512 B and 2 MiB segments,
# blocks split and cached), and cuBLAS / cuDNN keep workspaces of their own: the estimate counts tensors.
CUDA_RESERVE_FACTOR = 1.10
CUDA_WORKSPACE = 512 * 2**20


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
        quantize=precision.quantize if precision.quantize in QUANTIZE_CHOICES else "none",  # a model's own: from its config
        dtype=precision.dtype,
        autocast=precision.autocast,
        batch_size=cfg.batch_size * (1 if cfg.objective == "sft" else 2),  # a preference pair is two rows of a batch
        seq_len=cfg.max_seq_length,
        world_size=ctx.world_size,
        parallel=cfg.parallel,
        grad_checkpoint=cfg.grad_checkpoint,
        trust_remote_code=cfg.trust_remote_code,
        offload=cfg.fsdp_offload,
    )


def needs(estimate, cfg: TrainConfig, device: torch.device, processes: int = 1) -> tuple[int, int]:
    """(bytes on ``device``, bytes of CPU memory) the run's ``processes`` on this machine need at their peaks: training's
    or loading's (a whole base per process before FSDP shards it), with CUDA's allocator margin."""
    through_host = estimate.quantize == "none" and device.type == "cuda"  # loaded in CPU memory, then moved or sharded
    on_device = estimate.total if through_host and load_device(cfg, device) == "cpu" else max(estimate.total, estimate.load)
    if device.type == "cuda":
        return int(on_device * CUDA_RESERVE_FACTOR) + CUDA_WORKSPACE, estimate.load * processes if through_host else 0
    return on_device * processes, 0  # a CPU run: the device is the host, shared by the processes on it


def check_fits(cfg: TrainConfig, precision: Precision, device: torch.device, ctx: DistContext) -> None:
    """Refuse, in one line with the numbers and the flags that lower them, a run the device (or, loading the base,
    the CPU memory) cannot hold."""
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
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))  # the run's processes on this machine
    on_device, on_host = needs(estimate, cfg, device, processes)
    host_free = free if device.type == "cpu" else free_bytes(torch.device("cpu"))
    if on_device > free:
        _refuse(cfg, estimate, f"this run needs about {_gib(on_device)} of memory on {device.type} and {_gib(free)} is free")
    if on_host and host_free is not None and on_host > host_free:
        _refuse(
            cfg,
            estimate,
            f"loading the base needs about {_gib(on_host)} of CPU memory (the whole base in each of {processes} "
            f"process{'es' if processes > 1 else ''}) and {_gib(host_free)} is free",
        )


def _refuse(cfg: TrainConfig, estimate, what: str) -> None:
    parallel = cfg.parallel
    lower = [f"{param('batch_size')} (now {cfg.batch_size})", f"{param('max_seq_length')} (now {cfg.max_seq_length})"]
    if estimate.quantize == "none":  # a model that came quantized cannot be quantized again
        lower.insert(0, f"{param('quantize')} nf4")
    if not cfg.grad_checkpoint:
        lower.append(param("grad_checkpoint"))
    if parallel != "fsdp":
        lower.append(f"{param('parallel')} fsdp under torchrun")
    rough = "" if estimate.traced else " (its activations a rough count: this architecture cannot be traced)"
    raise UsageError(f"{what}{rough}; lower it with {', '.join(lower)}, or set {SKIP_VARIABLE}=off if you know it fits")
