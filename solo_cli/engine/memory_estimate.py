"""How much memory training needs, from a model's config alone: no weights are read, nothing is allocated.

The model is built under torch's ``FakeTensorMode`` (tensors with a shape, a dtype and a device but
no data), the adapter is attached to it, and one forward pass of its body runs there under
``torch.autograd.graph.saved_tensors_hooks`` (and under the run's autocast, whose casts of the weights
are kept too): the distinct tensors autograd keeps for the backward pass are exactly the activations a
real step keeps, block by block, whatever the architecture. A fake CPU tensor takes the CPU's attention
kernels, which keep O(T) per head as CUDA's do (not the O(T^2) attention matrix). A forward that cannot
run on fake tensors (a float32 mixture of experts: torch's grouped matmul has no float32 fake kernel) is
counted by a rough per-block formula instead, and the estimate says so (``activations_method``).
What no forward shows is counted by formula:

- base weights per dtype, as :mod:`solo_cli.engine.weight_memory` stores them: quantized by
  ``--quantize``, or as the model's own ``quantization_config`` says (a model that came quantized);
- the loss: the vocabulary projection and cross-entropy over the positions that carry loss (solo,
  ``engine/loss.py``) or over every position (LoRA through peft and transformers: full logits);
- the trainable parameters, their gradients and AdamW's two moments, all float32;
- FSDP (``parallel="fsdp"``): the base sharded over ``world_size`` processes, plus the blocks
  gathered while they run (the one running and the one prefetched) and the root's parameters;
  ``load``: the whole base, which each process holds while it loads, before it is sharded.

Solo backpropagates only through the blocks above the lowest destination of any connection (the
destination block itself runs no backward; ``training/trainer.py``); LoRA through every block.
Calibrated against measured CPU peaks (see tests/engine/test_memory_estimate.py and the report of
issue 20).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UsageError, param
from .choices import COMPUTE_DTYPES, PARALLEL_MODES
from .quantization import QUANTIZE_CHOICES, prequantized
from .weight_memory import DTYPE_BYTES, is_linear, linear_dims, quantize_packing, stored_packing, weight_bytes

METHODS = ("solo", "lora-qv", "lora-all")
PARTS = ("weights", "gathered", "activations", "sources", "loss", "adapter", "gradients", "optimizer", "workspace")
# LoRA on q and v as peft applies it (its default target_modules per architecture): the q and v projections, or a
# fused projection whole (GPT-2's c_attn, GPT-NeoX's query_key_value, Phi-3's qkv_proj, MPT's Wqkv), one A and B on it.
QV_NAMES = {"q_proj", "v_proj", "query", "value", "q", "v", "c_attn", "query_key_value", "qkv_proj", "Wqkv"}
LOSS_COPIES = 3  # float32 (positions x vocab) buffers alive at the loss's peak: log-softmax, its gradient, the logits'


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of one training process (model and training state, not the Python runtime), by part."""

    total: int
    parts: dict[str, int] = field(default_factory=dict)
    method: str = "solo"
    trainable_params: int = 0
    traced: bool = True  # the activations come from a fake forward pass (False: a rough per-block formula)
    quantize: str = "none"  # how the base's linear weights are stored: a --quantize choice or the model's own method
    load: int = 0  # the whole base's bytes, which a process holds while it loads, before FSDP shards it

    @property
    def activations_method(self) -> str:
        return "traced" if self.traced else "rough"

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "parts": dict(self.parts),
            "method": self.method,
            "trainable_params": self.trainable_params,
            "traced": self.traced,
            "activations_method": self.activations_method,
            "quantize": self.quantize,
            "load": self.load,
        }


def _check(method: str, quantize: str, dtype: str, parallel: str, world_size: int, batch_size: int, seq_len: int) -> None:
    problems = []
    for name, value, choices in (
        ("method", method, METHODS),
        ("quantize", quantize, QUANTIZE_CHOICES),
        ("dtype", dtype, COMPUTE_DTYPES),
        ("parallel", parallel, PARALLEL_MODES),
    ):
        if value not in choices:
            problems.append(f"{param(name)} {value!r}: use one of {', '.join(choices)}")
    for name, value in (("world_size", world_size), ("batch_size", batch_size), ("max_seq_length", seq_len)):
        if value < 1:
            problems.append(f"{param(name)} {value}: must be at least 1")
    if problems:
        raise UsageError("; ".join(problems))


# LoRA's dropout on each adapted layer's input: QLoRA's setting for 7B-13B bases (Dettmers et al. 2023), and
# bench/scale.py's. peft keeps the dropped copy of the input and its mask for the backward pass, per layer.
LORA_DROPOUT = 0.1


class _LoRA(nn.Module):
    """A linear layer with LoRA's ``B A dropout(x)`` beside it (peft's layer), for tracing only."""

    def __init__(self, base: nn.Module, d_in: int, d_out: int, rank: int) -> None:
        super().__init__()
        self.base = base
        self.dropout = nn.Dropout(LORA_DROPOUT)
        self.lora_A = nn.Linear(d_in, rank, bias=False, dtype=torch.float32)
        self.lora_B = nn.Linear(rank, d_out, bias=False, dtype=torch.float32)

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(self.dropout(x.to(torch.float32)))).to(x.dtype)


def lora_targets(blocks: nn.ModuleList, method: str) -> list[tuple[nn.Module, str, nn.Module, int, int]]:
    """LoRA's layers: ``(block, name, layer, d_in, d_out)`` of q and v (or the fused qkv) for ``lora-qv``, of every
    linear layer of the blocks for ``lora-all``."""
    found = []
    for block in blocks:
        for name, module in block.named_modules():
            if not (name and is_linear(module)) or (method == "lora-qv" and name.rsplit(".", 1)[-1] not in QV_NAMES):
                continue
            found.append((block, name, module, *linear_dims(module)))
    return found


def lora_params(blocks: nn.ModuleList, method: str, rank: int) -> int:
    """Trainable parameters of LoRA at ``rank`` on :func:`lora_targets`: ``rank x (d_in + d_out)`` a layer."""
    return sum(rank * (d_in + d_out) for *_, d_in, d_out in lora_targets(blocks, method))


def add_lora(targets: list, rank: int) -> None:
    """Wrap each of :func:`lora_targets` in LoRA at ``rank``."""
    for block, name, module, d_in, d_out in targets:
        parent, _, leaf = name.rpartition(".")
        setattr(block.get_submodule(parent) if parent else block, leaf, _LoRA(module, d_in, d_out, rank))


@dataclass
class _Trace:
    """What one fake forward pass kept for the backward pass, in bytes."""

    per_block: list[int]  # saved by each block (0 where no gradient is recorded)
    block_input: int  # one block's input hidden state
    connections: int = 0  # saved by the Solo connections themselves
    other: int = 0  # saved outside the blocks (the final norm)
    sources: int = 0  # Solo's stored sources that nothing else keeps


def _storage_key(tensor: torch.Tensor) -> tuple[int, int]:
    storage = tensor.untyped_storage()
    return storage._cdata, storage.nbytes()


@contextlib.contextmanager
def saved_by_module(blocks: nn.ModuleList, trace: _Trace, skip: set[int], connections=()):
    """Count the bytes of every distinct tensor autograd saves (``skip``: storages not to count, the weights'),
    charged to the block or the Solo connection (among ``connections``) running."""
    where: list = [None]
    handles = [conn.register_forward_pre_hook(lambda m, a: where.__setitem__(0, "connection")) for conn in connections]
    for k, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(lambda m, a, k=k: where.__setitem__(0, k)))
        handles.append(block.register_forward_hook(lambda m, a, o: where.__setitem__(0, None)))

    def pack(tensor):
        key, nbytes = _storage_key(tensor)
        if key not in skip:
            skip.add(key)
            running = where[0]
            if running == "connection":
                trace.connections += nbytes
            elif running is None:
                trace.other += nbytes
            else:
                trace.per_block[running] += nbytes
        return tensor

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield
    finally:
        for handle in handles:
            handle.remove()


def _trace(model, blocks, method, plan, rank, batch_size, seq_len, hidden, dtype) -> _Trace:
    """Run the body forward on fake inputs with the adapter attached; returns what autograd kept."""
    from .adapter import AdapterConfig, SoloAdapter
    from .modeling_solo import SoloHooks, drop_fake_constants

    trace = _Trace([0] * len(blocks), batch_size * seq_len * hidden * DTYPE_BYTES[dtype])
    skip = {_storage_key(p)[0] for p in model.parameters()}
    handle = None
    if method == "solo":
        adapter = SoloAdapter(AdapterConfig(plan, rank, "schedule", 10, hidden, source_norm="rms"))
        adapter.set_homotopy_step(0)
        handle = SoloHooks(model, blocks, adapter.items())  # attach() would move fake tensors
    else:
        add_lora(lora_targets(blocks, method), rank)
    body = getattr(model, "base_model", model)
    ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
    try:
        with saved_by_module(blocks, trace, skip, adapter.connections.values() if handle is not None else ()):
            out = body(input_ids=ids, use_cache=False)
            del out
        if handle is not None:
            sources = {_storage_key(t) for t in handle.sources.values()}
            trace.sources = sum(n for key, n in sources if key not in skip)
    finally:
        if handle is not None:
            handle.remove()
        drop_fake_constants()  # the connection's constants cached while tracing
    return trace


def _activations(trace: _Trace, grad_checkpoint: bool) -> int:
    """Bytes kept for the backward pass: every recording block's, or under checkpointing its input and one block's."""
    recording = [b for b in trace.per_block if b]
    kept = sum(recording) if not grad_checkpoint else len(recording) * trace.block_input + max(recording, default=0)
    return kept + trace.connections + trace.other


def _loss_bytes(method: str, vocab: int, hidden: int, batch_size: int, seq_len: int, dtype: str, loss_fraction: float) -> int:
    """The loss's peak: logits in the compute dtype (``dtype``: the autocast dtype under autocast) and float32 buffers
    over (positions x vocab).

    Solo projects only the positions that carry loss (engine/loss.py); peft and transformers project every position.
    """
    positions = batch_size * seq_len if method != "solo" else int(batch_size * (seq_len - 1) * loss_fraction)
    width = DTYPE_BYTES[dtype]
    logits = positions * vocab * (LOSS_COPIES * 4 + (width if width != 4 else 0))
    return logits + positions * hidden * 4


def _weights(per_block: list[int], root: int, world_size: int, parallel: str) -> tuple[int, int]:
    """(resident, gathered) base weight bytes on one process: all of them, or a shard plus what FSDP gathers."""
    total = sum(per_block) + root
    if parallel != "fsdp" or world_size == 1:
        return total, 0
    resident = -(-total // world_size)
    # the block running and the one prefetched, and the root's parameters (kept gathered through the step)
    gathered = 2 * max(per_block, default=0) + root - -(-root // world_size)
    return resident, gathered


def _fake_model(config, dtype: str, trust_remote_code: bool):
    from torch._subclasses.fake_tensor import FakeTensorMode
    from transformers import AutoModelForCausalLM

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code)
    model.requires_grad_(False)
    return model, mode


# torch logs every operator its fake tensors cannot run (a full traceback each, at ERROR), which is how the
# trace finds an architecture it cannot follow; the estimate then says "rough" instead.
FAKE_TENSOR_LOGGER = "torch._subclasses.fake_tensor"


@contextlib.contextmanager
def _quiet_fake_tensors():
    logger = logging.getLogger(FAKE_TENSOR_LOGGER)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _traced(model, mode, blocks, method, plan, rank, batch_size, seq_len, hidden, dtype, autocast) -> tuple[_Trace, bool]:
    """What the forward keeps, traced on fake tensors under the run's autocast (torch's CPU autocast: the fake
    tensors are CPU ones; it casts the same matmuls as CUDA's), or, where the forward cannot run on fake tensors
    (MoE layers' grouped matmuls in float32, data-dependent shapes), a rough count per block (False)."""
    cast = torch.autocast("cpu", dtype=getattr(torch, autocast or "bfloat16"), enabled=autocast is not None)
    try:
        with _quiet_fake_tensors(), mode, cast:
            return _trace(model, blocks, method, plan, rank, batch_size, seq_len, hidden, dtype), True
    except Exception:
        return _rough_trace(method, plan, len(blocks), batch_size, seq_len, hidden, autocast or dtype), False


FSDP_SHARDS = ("none", "nf4", "fp4")  # weights FSDP shards (training/sharding.py); 8-bit and packed integers it cannot


def _base_packing(config, quantize: str, dtype: str, parallel: str):
    """How the base's linear weights are stored, and what to call it: ``--quantize``'s, or the model's own."""
    found = prequantized(config)
    if found is not None and quantize != "none":
        raise UsageError(
            f"{param('quantize')} {quantize}: the model is already quantized ({found}) and loads as it is; "
            f"drop {param('quantize')} (or pass {param('quantize')} none)"
        )
    stored = found or quantize
    if parallel == "fsdp" and stored not in FSDP_SHARDS:
        raise UsageError(
            f"{param('parallel')} fsdp: the base's {stored} weights cannot be sharded by FSDP; "
            f"use an unquantized base or {param('quantize')} nf4 / fp4, or {param('parallel')} ddp"
        )
    return (stored_packing(config) if found else quantize_packing(quantize, dtype)), stored


def train_memory(
    config,
    *,
    method: str = "solo",
    connections: str = "chain",
    rank: int = 3,
    quantize: str = "none",
    dtype: str = "float32",
    autocast: str | None = None,
    batch_size: int = 8,
    seq_len: int = 256,
    world_size: int = 1,
    parallel: str = "ddp",
    grad_checkpoint: bool = False,
    trust_remote_code: bool = False,
    loss_fraction: float = 1.0,
    offload: bool = False,
) -> MemoryEstimate:
    """The peak memory of one training process for ``config`` (a transformers config), by part.

    ``method``: ``solo`` (``connections`` at ``rank``), ``lora-qv`` or ``lora-all`` (LoRA at ``rank`` on q and v,
    or on every linear layer of the blocks). ``dtype`` is the base's (compute) dtype, ``quantize`` its linear
    weights (as ``--quantize``; a config with a ``quantization_config`` is costed as it is stored, and refuses
    another ``quantize``), ``autocast`` the dtype the training forward runs under (the run's
    ``Precision.autocast``: a float32 base on a native-bf16 GPU). ``batch_size`` x ``seq_len`` tokens a
    micro-batch, ``loss_fraction`` of them carrying loss (solo projects only those). ``offload``: FSDP keeps the
    sharded base in host memory, so only the gathered blocks are on the device. Raises :class:`UsageError` for a
    bad choice or plan.
    """
    from .blocks import find_blocks
    from .topology import parse_connections

    _check(method, quantize, dtype, parallel, world_size, batch_size, seq_len)
    if rank < 1:
        raise UsageError(f"{param('rank')} {rank}: must be at least 1")
    if autocast not in (None, "bfloat16", "float16"):
        raise UsageError(f"autocast {autocast!r}: use bfloat16, float16 or None")
    packing, stored = _base_packing(config, quantize, dtype, parallel)
    model, mode = _fake_model(config, dtype, trust_remote_code)
    _, blocks = find_blocks(model)
    plan = parse_connections(connections, len(blocks)) if method == "solo" else []
    per_block, root = weight_bytes(model, blocks, packing, dtype)
    hidden = int(getattr(config, "hidden_size", 0) or blocks[0].parameters().__next__().shape[-1])
    if method == "solo":  # A and B per connection (a scheduled gate is a buffer)
        trainable = 2 * hidden * rank * len(plan)
    else:
        trainable = lora_params(blocks, method, rank)
    trace, traced = _traced(model, mode, blocks, method, plan, rank, batch_size, seq_len, hidden, dtype, autocast)
    resident, gathered = _weights(per_block, root, world_size, parallel)
    if offload and parallel == "fsdp":  # the shards live in host memory; the device holds what is gathered
        resident, gathered = 0, gathered + -(-root // world_size)
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    parts = dict.fromkeys(PARTS, 0)
    parts["weights"], parts["gathered"] = resident, gathered
    parts["activations"] = _activations(trace, grad_checkpoint)
    parts["sources"] = trace.sources
    # under autocast the head's matmul also keeps its weight cast to the autocast dtype for the backward pass
    head_copy = vocab * hidden * DTYPE_BYTES[autocast] if autocast else 0
    parts["loss"] = _loss_bytes(method, vocab, hidden, batch_size, seq_len, autocast or dtype, loss_fraction) + head_copy
    parts["adapter"] = 4 * trainable
    parts["gradients"] = 4 * trainable * (2 if world_size > 1 and parallel == "ddp" else 1)  # DDP's bucket copy
    parts["optimizer"] = 8 * trainable
    parts["workspace"] = max(trace.per_block, default=0)  # one block's gradients while its backward runs
    load = sum(per_block) + root  # the whole base, which every process loads before FSDP shards it
    return MemoryEstimate(sum(parts.values()), parts, method, trainable, traced, stored, load)


def _rough_trace(method, plan, num_blocks, batch_size, seq_len, hidden, dtype) -> _Trace:
    """Without a trace: about 16 hidden states a recording block (attention and an MLP of 3-4x the width). Solo
    records the blocks above its lowest destination (the destination block itself runs no backward), LoRA every one."""
    first = 0 if method != "solo" else min(j for _, j in plan) + 1
    state = batch_size * seq_len * hidden * DTYPE_BYTES[dtype]
    return _Trace([16 * state if k >= first else 0 for k in range(num_blocks)], state)
