"""Bytes of a base model's weights as they are stored: in the compute dtype, as ``--quantize`` stores them, or as the
model's own ``quantization_config`` says they were stored (a model that came quantized).

Only the blocks' linear layers are quantized: embeddings, norms and the output head stay in the compute
dtype, as transformers' integrations (bitsandbytes, GPTQ, AWQ, compressed-tensors) leave them. A quantized
linear weight keeps ``bits`` a weight plus a scale (and a zero point) for each group of weights:

- ``nf4``/``fp4`` (bitsandbytes 4-bit): half a byte a weight and a float32 absmax per block of 64 of the
  flattened weight (about 1 byte with double quantization); a layer narrower than 64 stays unquantized.
- ``int8`` (LLM.int8()): a byte a weight and a float32 scale per output row.
- ``torchao-int8``: a byte a weight and a scale per row in the compute dtype.
- GPTQ / AWQ: ``bits`` a weight (packed in int32), a float16 scale and a packed zero point per
  ``group_size`` inputs of each row; GPTQ also an int32 group index per input feature.
- compressed-tensors: its weights' ``num_bits`` and ``group_size`` (strategy ``channel``: one group a row),
  a 2-byte scale per group (and a zero point when asymmetric).

A ``quantization_config`` of another method with a ``bits`` field is costed from it; one without is costed
at the compute dtype (which over-counts, never under-counts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from .quantization import prequantized

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
BNB_BLOCK = 64  # bitsandbytes 4-bit: one float32 absmax per 64 weights; narrower layers stay unquantized


@dataclass(frozen=True)
class Packing:
    """How a quantized linear weight is stored: ``bits`` a weight, and ``scale_bytes`` for each group of ``group``
    weights along a row (0: one group a row) or, ``flat``, of the flattened weight; ``per_input`` bytes for each
    input feature; a layer narrower than ``min_in`` inputs stays in the compute dtype."""

    name: str
    bits: float
    group: int = 0
    scale_bytes: float = 4.0
    flat: bool = False
    per_input: int = 0
    min_in: int = 0

    def linear_bytes(self, d_in: int, d_out: int, full: int) -> int:
        """Bytes of a ``d_out x d_in`` weight stored this way (``full``: its bytes in the compute dtype)."""
        if d_in < self.min_in:
            return full
        n = d_in * d_out
        groups = -(-n // self.group) if self.flat else d_out * (-(-d_in // self.group) if self.group else 1)
        return math.ceil(n * self.bits / 8 + groups * self.scale_bytes) + self.per_input * d_in


def bnb_4bit(name: str, double_quant: bool = False) -> Packing:
    # double quantization stores each absmax in 8 bits, with a float32 constant per 256 of them
    return Packing(name, 4, BNB_BLOCK, 1 + 4 / 256 if double_quant else 4.0, flat=True, min_in=BNB_BLOCK)


def quantize_packing(quantize: str, dtype: str) -> Packing | None:
    """How ``--quantize quantize`` stores a linear weight computing in ``dtype``; None for ``none``."""
    if quantize in ("nf4", "fp4"):
        return bnb_4bit(quantize)
    if quantize == "int8":
        return Packing("int8", 8, 0, 4)
    if quantize == "torchao-int8":
        return Packing("torchao-int8", 8, 0, DTYPE_BYTES[dtype])
    return None


def _as_dict(quant) -> dict:
    if isinstance(quant, dict):
        return quant
    return quant.to_dict() if hasattr(quant, "to_dict") else dict(vars(quant))


def _group(value) -> int:
    size = int(value or 0)
    return size if size > 0 else 0  # -1 (GPTQ) or none: one group a row


def _compressed_tensors(quant: dict, name: str) -> Packing | None:
    for group in (quant.get("config_groups") or {}).values():
        weights = (group or {}).get("weights") if isinstance(group, dict) else None
        if not weights or not weights.get("num_bits"):
            continue
        bits = int(weights["num_bits"])
        size = _group(weights.get("group_size")) if weights.get("strategy") == "group" else 0
        zero = 0 if weights.get("symmetric", True) else bits / 8
        return Packing(name, bits, size, 2 + zero)
    return None  # only sparsity, or no weights quantized


def stored_packing(config) -> Packing | None:
    """How a model that came quantized stores its linear weights, from its config's ``quantization_config``;
    None for a model that is not quantized (or a method whose storage this cannot tell)."""
    name = prequantized(config)
    if name is None:
        return None
    quant = _as_dict(config.quantization_config)
    if name in ("nf4", "fp4"):
        return bnb_4bit(name, bool(quant.get("bnb_4bit_use_double_quant")))
    if name == "int8":
        return quantize_packing("int8", "float32")
    bits = quant.get("bits") or quant.get("w_bit")
    if name in ("gptq", "awq") and bits:
        group = _group(quant.get("group_size") or quant.get("q_group_size"))
        zero = int(bits) / 8 if name == "gptq" or quant.get("zero_point", True) else 0
        return Packing(name, int(bits), group, 2 + zero, per_input=4 if name == "gptq" else 0)
    if name == "compressed-tensors":
        return _compressed_tensors(quant, name)
    if bits:
        return Packing(name, int(bits), _group(quant.get("group_size")), 2 + int(bits) / 8)
    if "fp8" in name:
        return Packing(name, 8, 0, 4)
    return None


def is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"  # GPT-2's Conv1D is a linear layer


def linear_dims(module: nn.Module) -> tuple[int, int]:
    """``(d_in, d_out)`` of a linear layer (:func:`is_linear`): ``nn.Linear`` stores its weight (out, in), transformers'
    Conv1D (GPT-2) (in, out)."""
    rows, cols = module.weight.shape
    return (cols, rows) if isinstance(module, nn.Linear) else (rows, cols)


def linear_bytes(d_in: int, d_out: int, quantize: str | Packing | None, dtype: str) -> int:
    """Bytes of a ``d_out x d_in`` linear weight stored as ``quantize`` (a ``--quantize`` choice or a
    :class:`Packing`; bias not included)."""
    packing = quantize if isinstance(quantize, Packing) or quantize is None else quantize_packing(quantize, dtype)
    full = d_in * d_out * DTYPE_BYTES[dtype]
    return full if packing is None else packing.linear_bytes(d_in, d_out, full)


def _module_bytes(module: nn.Module, packing: Packing | None, dtype: str, in_block: bool) -> int:
    """Bytes of ``module``'s own parameters (not its children's)."""
    total = 0
    for name, p in module.named_parameters(recurse=False):
        if name == "weight" and in_block and p.dim() == 2 and is_linear(module):
            total += linear_bytes(*linear_dims(module), packing, dtype)
        else:
            total += p.numel() * DTYPE_BYTES[dtype]
    return total


def weight_bytes(model: nn.Module, blocks: nn.ModuleList, packing: Packing | None, dtype: str) -> tuple[list[int], int]:
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
            total += _module_bytes(m, packing, dtype, True)
        per_block.append(total)
    for m in model.modules():
        if id(m) in in_blocks or any(id(p) in seen for p in m.parameters(recurse=False)):
            continue
        seen.update(id(p) for p in m.parameters(recurse=False))
        root += _module_bytes(m, packing, dtype, False)
    return per_block, root
