"""What a connection plan would cost on a model, for `solo inspect --model`: its parameters beside LoRA r=4 on
q and v, and the memory training needs beside LoRA r=8 (on every linear layer, QLoRA's setting, and on q and v).

The model is built on the meta device (the memory estimate: on fake tensors) from its config, so no weights are read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..engine.adapter_config import TRAINABLE_GATES
from ..engine.blocks import find_blocks, fingerprint
from ..engine.memory_estimate import lora_params
from ..engine.quantization import count_params
from ..engine.topology import format_connections, parse_connections
from ..errors import UsageError, param

LORA_MEMORY_RANK = 8  # the memory comparison's LoRA: r=8, as QLoRA and most LoRA recipes train


@dataclass(frozen=True)
class MemorySettings:
    """The run whose training memory is estimated: as ``solo train``'s flags of the same names."""

    quantize: str = "none"
    dtype: str = "float32"  # resolved: float32, bfloat16 or float16
    autocast: str | None = None  # what the training forward runs under (a float32 base on a native-bf16 GPU: bfloat16)
    batch_size: int = 8
    max_seq_length: int = 256
    world_size: int = 1
    parallel: str = "ddp"
    grad_checkpoint: bool = False


def memory_report(config, spec: str, rank: int, settings: MemorySettings, trust_remote_code: bool = False) -> dict:
    """Training memory per process, in bytes: ``solo`` (the plan), ``lora`` (LoRA r=8 on every linear layer of the
    blocks, the QLoRA setting) and ``lora_qv`` (LoRA r=8 on q and v), with each one's parts and the settings.

    ``activations_method`` says, for each, whether its activations were traced or are a rough count (an
    architecture whose forward cannot run on fake tensors); ``load`` is the whole base, which each process holds
    while it loads, before ``--parallel fsdp`` shards it; ``settings.quantize`` is how the base's weights are
    stored (for a model that came quantized, its own method)."""
    from ..engine.memory_estimate import train_memory

    common = {
        "quantize": settings.quantize,
        "dtype": settings.dtype,
        "autocast": settings.autocast,
        "batch_size": settings.batch_size,
        "seq_len": settings.max_seq_length,
        "world_size": settings.world_size,
        "parallel": settings.parallel,
        "grad_checkpoint": settings.grad_checkpoint,
        "trust_remote_code": trust_remote_code,
    }
    runs = {
        "solo": train_memory(config, method="solo", connections=spec, rank=rank, **common),
        "lora": train_memory(config, method="lora-all", rank=LORA_MEMORY_RANK, **common),
        "lora_qv": train_memory(config, method="lora-qv", rank=LORA_MEMORY_RANK, **common),
    }
    report: dict = {name: est.total for name, est in runs.items()}
    report["parts"] = {name: est.parts for name, est in runs.items()}
    report["activations_method"] = {name: est.activations_method for name, est in runs.items()}
    report["load"] = runs["solo"].load
    report["settings"] = asdict(settings) | {"quantize": runs["solo"].quantize, "lora_rank": LORA_MEMORY_RANK}
    return report


def _meta_model(model_name: str, revision: str | None, trust_remote_code: bool):
    """The model's config and the model built from it on the meta device: its shapes, no weights."""
    from transformers import AutoModelForCausalLM

    from ..engine.models import load_config

    config = load_config(model_name, revision, trust_remote_code)
    with torch.device("meta"):  # no weights: nothing is allocated
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    return config, model


def _plan(model, model_name: str, spec: str, rank: int, gate: str) -> dict:
    """The model's blocks and the plan's trainable parameters beside LoRA r=4 on q and v (the ``plan_report`` dict)."""
    fp = fingerprint(model)
    if rank > fp.hidden_size:
        raise UsageError(
            f"{param('rank')} {rank}: more than the hidden size {fp.hidden_size} of {model_name} "
            f"(a connection's map is {fp.hidden_size} x {fp.hidden_size}); give {param('rank')} {fp.hidden_size} or less"
        )
    path, blocks = find_blocks(model)
    connections = parse_connections(spec, fp.num_blocks)
    per_connection = 2 * fp.hidden_size * rank  # a scheduled gate is a buffer, not a parameter
    solo_total = per_connection * len(connections)
    lora = lora_params(blocks, "lora-qv", 4) or None  # None: no q and v projections it knows
    lowest = min(j for _, j in connections)
    return {
        "model": model_name,
        "fingerprint": fp.to_dict(),
        "blocks_path": path,
        "block_class": type(blocks[0]).__name__,
        "block_params": count_params(blocks[0]),
        "total_params": count_params(model),
        "plan": {
            "connections": format_connections(connections),
            "count": len(connections),
            "rank": rank,
            "gate": gate,
            "params_per_connection": per_connection,
            "trainable_params": solo_total,
            "lowest_destination": lowest,
            "blocks_with_backward": fp.num_blocks - lowest - 1,  # the destination block itself runs no backward
        },
        "lora_qv_r4": {
            "trainable_params": lora,
            "blocks_with_backward": fp.num_blocks,
        },
        "ratio_to_lora": (solo_total / lora) if lora else None,
    }


def plan_report(
    model_name: str,
    spec: str,
    rank: int,
    gate: str = "schedule",
    revision: str | None = None,
    trust_remote_code: bool = False,
    memory: MemorySettings | None = None,
) -> dict:
    """The model's blocks and what a connection plan costs, beside LoRA r=4 on q and v; with ``memory``, also
    ``train_memory`` (:func:`memory_report`) for a run with those settings.

    ``gate`` is one a run trains (schedule or zero-init) and ``rank`` at most the hidden size:
    refused otherwise (:class:`UsageError`), as `solo train` would refuse them.
    """
    if gate not in TRAINABLE_GATES:
        raise UsageError(f"{param('gate')} {gate!r}: use one of {', '.join(TRAINABLE_GATES)}")
    if rank < 1:
        raise UsageError(f"{param('rank')} {rank}: must be at least 1")
    config, model = _meta_model(model_name, revision, trust_remote_code)
    report = _plan(model, model_name, spec, rank, gate)
    if memory is not None:
        report["train_memory"] = memory_report(config, spec, rank, memory, trust_remote_code)
    return report
