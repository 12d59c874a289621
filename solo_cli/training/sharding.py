"""``--parallel fsdp``: the frozen base sharded across the processes of a torchrun launch (FSDP2).

Every decoder block is its own ``fully_shard`` group, so each process keeps 1/N of every block's
weights and gathers one block at a time as the forward and backward passes reach it. What is left
of the base (embeddings, final norm, output head; tied weights stay together) is the root group,
:class:`ShardedBase`, which holds the model as its one submodule. FSDP gathers the root's
parameters only when a forward starts at the root, so everything that runs the base (the loss,
validation, the packing proof) goes through it: ``root(fn, *args)`` is ``fn(model, *args)`` with
the weights in place.

The adapter is not sharded: it is small, and the connections' hooks on the blocks read it
whole. It stays replicated, and its gradients are averaged across processes by
DistributedDataParallel exactly as under ``--parallel ddp`` (over a process group of their own,
so its all-reduces never interleave with FSDP's all-gathers). A run's arithmetic is the same under
both modes, so a checkpoint of one resumes under the other.

FSDP needs every process to run the same forwards: a process whose share of a global batch is
empty runs a stand-in (weighted 0), and validation gives every process the same number of batches
(:mod:`.sharded_validation`).
``--fsdp-offload`` keeps the shards in CPU memory (FSDP2's ``CPUOffloadPolicy``) and copies each
block to the GPU when it runs, for bases larger than the GPUs together.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..engine.blocks import find_blocks
from ..errors import UsageError, param
from .distributed import DistContext

# Weight types FSDP2 shards and gathers back intact. bitsandbytes' 4-bit Params4bit shards as bytes;
# the layer keeps its quantization state itself (measured: the same logits as unsharded). Its
# Int8Params (CB, SCB) and torchao's tensors lose what they carry, so those bases are refused.
SHARDABLE = ("Parameter", "Params4bit")


def check_sharding(parallel: str, offload: bool, quantize: str, ctx: DistContext, device: torch.device) -> None:
    """Refuse, before anything loads, a ``--parallel fsdp`` run that cannot shard here (one line, exit 2)."""
    if parallel != "fsdp":
        return
    flag = f"{param('parallel')} fsdp"
    if not ctx.enabled:
        # one process holds the whole base whatever the mode: sharding over one would only add the gathers
        raise UsageError(
            f"{flag} shards the base across processes, and this is one process; launch it with "
            f"`torchrun --nproc_per_node N -m solo_cli train ...` (N >= 2), or drop {param('parallel')}"
        )
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"{flag}: FSDP runs on cuda or cpu, not {device.type}; use {param('device')} cuda or cpu")
    if offload and device.type != "cuda":
        raise UsageError(
            f"{param('fsdp_offload')} keeps the base in CPU memory between GPU computations, and this run is on "
            f"{device.type}; drop {param('fsdp_offload')} (the base is in CPU memory already)"
        )
    if offload and quantize != "none":
        raise UsageError(f"{param('fsdp_offload')} with {param('quantize')} {quantize} is not supported; use one or the other")
    if quantize in ("nf4", "fp4"):
        refuse_old_torch_for_4bit(flag)


def refuse_old_torch_for_4bit(flag: str, version: str = torch.__version__) -> None:
    """FSDP2 before torch 2.12 makes each shard a parameter that asks for a gradient, which an integer tensor (a 4-bit
    weight's packed bytes) cannot: it failed deep inside ``fully_shard`` (measured on torch 2.7 and 2.11)."""
    if torch.torch_version.TorchVersion(version) < (2, 12):
        raise UsageError(
            f"{flag}: sharding a 4-bit base needs torch 2.12 or newer (FSDP cannot shard integer weights before it), "
            f"and this is torch {version}; upgrade torch, or use {param('parallel')} ddp"
        )


def check_shardable(model: nn.Module) -> None:
    """Refuse a base whose weights FSDP cannot shard: 8-bit and torchao weights, and the integer tensors in which GPTQ,
    AWQ and compressed-tensors keep theirs (``qweight``, ``weight_packed``): FSDP shards floating-point parameters
    and leaves buffers whole on every process, so such a base would be neither sharded nor smaller."""
    kinds = {type(p).__name__ for p in model.parameters()} - set(SHARDABLE)
    if any(type(p).__name__ == "Params4bit" for p in model.parameters()):  # a base that came in 4 bits
        refuse_old_torch_for_4bit(f"{param('parallel')} fsdp")
    try:
        _, scope = find_blocks(model)
    except UsageError:
        scope = model
    plain = [(n, p) for n, p in scope.named_parameters() if type(p).__name__ == "Parameter"]  # Params4bit: uint8, shards
    packed = [(n, t) for n, t in (*plain, *scope.named_buffers()) if not t.is_floating_point() and t.dtype != torch.bool]
    kinds |= {f"{n.rsplit('.', 1)[-1]} ({str(t.dtype).removeprefix('torch.')})" for n, t in packed}
    if kinds:
        raise UsageError(
            f"{param('parallel')} fsdp: the base's {', '.join(sorted(kinds))} weights cannot be sharded by FSDP; "
            f"use an unquantized base or {param('quantize')} nf4 / fp4, or {param('parallel')} ddp"
        )


class ShardedBase(nn.Module):
    """The FSDP root: the base model as its one submodule. ``self(fn, *args)`` runs ``fn(model, *args)``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.lm = model

    def forward(self, fn, *args):
        return fn(self.lm, *args)


def shard_base(model: nn.Module, device: torch.device, offload: bool = False) -> ShardedBase:
    """Shard ``model``'s weights across the process group, block by block (bottom-up, as FSDP asks); the root last.

    The shards go to ``device`` (or stay in CPU memory with ``offload``). Call on every process.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

    check_shardable(model)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # FSDP's mesh uses the current device
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = CPUOffloadPolicy() if offload else OffloadPolicy()
    _, blocks = find_blocks(model)
    for block in blocks:
        fully_shard(block, mesh=mesh, offload_policy=policy)
    root = ShardedBase(model)
    fully_shard(root, mesh=mesh, offload_policy=policy)
    return root


def load_device(cfg, device: torch.device) -> str:
    """Where the base loads: under ``--parallel fsdp`` an unquantized base loads in CPU memory and each process's
    shards alone go to its GPU (:func:`shard_base`); otherwise (and a 4-bit base, quantized on its device) ``device``."""
    return "cpu" if cfg.parallel == "fsdp" and cfg.quantize == "none" else str(device)
