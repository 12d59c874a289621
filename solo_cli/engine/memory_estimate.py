"""How much memory training needs, from a model's config alone: no weights are read, nothing is allocated.

The model is built under torch's ``FakeTensorMode`` (tensors with a shape, a dtype and a device but
no data), the adapter is attached to it, and one forward pass of its body runs there under
``torch.autograd.graph.saved_tensors_hooks``: the distinct tensors autograd keeps for the backward
pass are exactly the activations a real step keeps, block by block, whatever the architecture. A
fake CPU tensor takes the CPU's attention kernels, which keep O(T) per head as CUDA's do (not the
O(T^2) attention matrix). What no forward shows is counted by formula:

- base weights per dtype; ``nf4``/``fp4`` (bitsandbytes 4-bit) keep half a byte a weight plus a
  float32 absmax per block of 64; ``int8`` (LLM.int8()) a byte plus a float32 scale per output row;
  ``torchao-int8`` a byte plus a scale per row in the compute dtype. Only the blocks' linear layers
  are quantized: embeddings, norms and the output head stay in the compute dtype, as transformers'
  integrations leave them.
- the loss: the vocabulary projection and cross-entropy over the positions that carry loss (solo,
  ``engine/loss.py``) or over every position (LoRA through peft and transformers: full logits);
- the trainable parameters, their gradients and AdamW's two moments, all float32;
- FSDP (``parallel="fsdp"``): the base sharded over ``world_size`` processes, plus the blocks
  gathered while they run (the one running and the one prefetched) and the root's parameters.

Solo backpropagates only through the blocks at or above the lowest destination of any connection
(``training/trainer.py``); LoRA through every block. Calibrated against measured CPU peaks (see
tests/engine/test_memory_estimate.py and the report of issue 20).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import UsageError, param
from .quantization import QUANTIZE_CHOICES

METHODS = ("solo", "lora-qv", "lora-all")
PARALLEL_MODES = ("ddp", "fsdp")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
PARTS = ("weights", "gathered", "activations", "sources", "loss", "adapter", "gradients", "optimizer", "workspace")
QV_NAMES = {"q_proj", "v_proj", "query", "value", "q", "v", "c_attn", "query_key_value", "qkv_proj", "Wqkv"}
BNB_BLOCK = 64  # bitsandbytes 4-bit: one float32 absmax per 64 weights; narrower layers stay unquantized
LOSS_COPIES = 3  # float32 (positions x vocab) buffers alive at the loss's peak: log-softmax, its gradient, the logits'


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of one training process (model and training state, not the Python runtime), by part."""

    total: int
    parts: dict[str, int] = field(default_factory=dict)
    method: str = "solo"
    trainable_params: int = 0
    traced: bool = True  # the activations come from a fake forward pass (False: a rough per-block formula)

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "parts": dict(self.parts),
            "method": self.method,
            "trainable_params": self.trainable_params,
            "traced": self.traced,
        }


def _check(method: str, quantize: str, dtype: str, parallel: str, world_size: int, batch_size: int, seq_len: int) -> None:
    problems = []
    for name, value, choices in (
        ("method", method, METHODS),
        ("quantize", quantize, QUANTIZE_CHOICES),
        ("dtype", dtype, tuple(DTYPE_BYTES)),
        ("parallel", parallel, PARALLEL_MODES),
    ):
        if value not in choices:
            problems.append(f"{param(name)} {value!r}: use one of {', '.join(choices)}")
    for name, value in (("world_size", world_size), ("batch_size", batch_size), ("max_seq_length", seq_len)):
        if value < 1:
            problems.append(f"{param(name)} {value}: must be at least 1")
    if problems:
        raise UsageError("; ".join(problems))


def linear_bytes(d_in: int, d_out: int, quantize: str, dtype: str) -> int:
    """Bytes of a ``d_out x d_in`` linear weight stored as ``quantize`` (bias not included)."""
    n, full = d_in * d_out, d_in * d_out * DTYPE_BYTES[dtype]
    if quantize in ("nf4", "fp4"):
        return full if d_in < BNB_BLOCK else n // 2 + 4 * -(-n // BNB_BLOCK)
    if quantize == "int8":
        return n + 4 * d_out
    if quantize == "torchao-int8":
        return n + DTYPE_BYTES[dtype] * d_out
    return full


def _module_bytes(module: nn.Module, quantize: str, dtype: str, in_block: bool) -> int:
    """Bytes of ``module``'s own parameters (not its children's)."""
    total = 0
    for name, p in module.named_parameters(recurse=False):
        if name == "weight" and in_block and p.dim() == 2 and _is_linear(module):
            d_in, d_out = (p.shape[1], p.shape[0]) if isinstance(module, nn.Linear) else (p.shape[0], p.shape[1])
            total += linear_bytes(d_in, d_out, quantize, dtype)
        else:
            total += p.numel() * DTYPE_BYTES[dtype]
    return total


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"  # GPT-2's Conv1D is a linear layer


def weight_bytes(model: nn.Module, blocks: nn.ModuleList, quantize: str, dtype: str) -> tuple[list[int], int]:
    """(bytes of each block, bytes of everything else: embeddings, final norm, head), shared tensors once."""
    in_blocks = {id(m) for block in blocks for m in block.modules()}
    seen: set[int] = set()
    per_block, root = [], 0
    for block in blocks:
        total = 0
        for m in block.modules():
            if any(id(p) in seen for p in m.parameters(recurse=False)):
                continue
            seen.update(id(p) for p in m.parameters(recurse=False))
            total += _module_bytes(m, quantize, dtype, True)
        per_block.append(total)
    for m in model.modules():
        if id(m) in in_blocks or any(id(p) in seen for p in m.parameters(recurse=False)):
            continue
        seen.update(id(p) for p in m.parameters(recurse=False))
        root += _module_bytes(m, quantize, dtype, False)
    return per_block, root


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
            if not (name and _is_linear(module)) or (method == "lora-qv" and name.rsplit(".", 1)[-1] not in QV_NAMES):
                continue
            w = module.weight
            d_in, d_out = (w.shape[1], w.shape[0]) if isinstance(module, nn.Linear) else (w.shape[0], w.shape[1])
            found.append((block, name, module, d_in, d_out))
    return found


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
    from torch._subclasses.fake_tensor import FakeTensor

    from . import modeling_solo
    from .adapter import AdapterConfig, SoloAdapter
    from .modeling_solo import SoloHooks

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
        for key in [k for k, v in modeling_solo._EPS.items() if isinstance(v, FakeTensor)]:
            del modeling_solo._EPS[key]  # a fake constant cached for real runs would break them
    return trace


def _activations(trace: _Trace, grad_checkpoint: bool) -> int:
    """Bytes kept for the backward pass: every recording block's, or under checkpointing its input and one block's."""
    recording = [b for b in trace.per_block if b]
    kept = sum(recording) if not grad_checkpoint else len(recording) * trace.block_input + max(recording, default=0)
    return kept + trace.connections + trace.other


def _loss_bytes(method: str, vocab: int, hidden: int, batch_size: int, seq_len: int, dtype: str, loss_fraction: float) -> int:
    """The loss's peak: logits in the compute dtype and float32 buffers over (positions x vocab).

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


def train_memory(
    config,
    *,
    method: str = "solo",
    connections: str = "chain",
    rank: int = 3,
    quantize: str = "none",
    dtype: str = "float32",
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
    weights (as ``--quantize``). ``batch_size`` x ``seq_len`` tokens a micro-batch, ``loss_fraction`` of them
    carrying loss (solo projects only those). ``offload``: FSDP keeps the sharded base in host memory, so only
    the gathered blocks are on the device. Raises :class:`UsageError` for a bad choice or plan.
    """
    from .blocks import find_blocks
    from .topology import parse_connections

    _check(method, quantize, dtype, parallel, world_size, batch_size, seq_len)
    if rank < 1:
        raise UsageError(f"{param('rank')} {rank}: must be at least 1")
    model, mode = _fake_model(config, dtype, trust_remote_code)
    _, blocks = find_blocks(model)
    plan = parse_connections(connections, len(blocks)) if method == "solo" else []
    per_block, root = weight_bytes(model, blocks, quantize, dtype)
    hidden = int(getattr(config, "hidden_size", 0) or blocks[0].parameters().__next__().shape[-1])
    if method == "solo":  # A and B per connection (a scheduled gate is a buffer)
        trainable = 2 * hidden * rank * len(plan)
    else:
        trainable = sum(rank * (d_in + d_out) for *_, d_in, d_out in lora_targets(blocks, method))
    try:
        with mode:
            trace, traced = _trace(model, blocks, method, plan, rank, batch_size, seq_len, hidden, dtype), True
    except Exception:  # an architecture whose forward cannot run on fake tensors: a rough count per block
        trace, traced = _rough_trace(method, plan, len(blocks), batch_size, seq_len, hidden, dtype), False
    resident, gathered = _weights(per_block, root, world_size, parallel)
    if offload and parallel == "fsdp":  # the shards live in host memory; the device holds what is gathered
        resident, gathered = 0, gathered + -(-root // world_size)
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    parts = dict.fromkeys(PARTS, 0)
    parts["weights"], parts["gathered"] = resident, gathered
    parts["activations"] = _activations(trace, grad_checkpoint)
    parts["sources"] = trace.sources
    parts["loss"] = _loss_bytes(method, vocab, hidden, batch_size, seq_len, dtype, loss_fraction)
    parts["adapter"] = 4 * trainable
    parts["gradients"] = 4 * trainable * (2 if world_size > 1 and parallel == "ddp" else 1)  # DDP's bucket copy
    parts["optimizer"] = 8 * trainable
    parts["workspace"] = max(trace.per_block, default=0)  # one block's gradients while its backward runs
    return MemoryEstimate(sum(parts.values()), parts, method, trainable, traced)


def _rough_trace(method, plan, num_blocks, batch_size, seq_len, hidden, dtype) -> _Trace:
    """Without a trace: about 16 hidden states a recording block (attention and an MLP of 3-4x the width)."""
    lowest = 0 if method != "solo" else max(0, min(j for _, j in plan))
    state = batch_size * seq_len * hidden * DTYPE_BYTES[dtype]
    return _Trace([16 * state if k >= lowest else 0 for k in range(num_blocks)], state)
