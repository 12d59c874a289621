"""``--quantize``: load the base's linear weights in 4 or 8 bits, through the backend transformers drives.

Only the frozen base is quantized. The adapter's connections (A, B, the gate) and the optimizer's
state stay float32: ``modeling_solo`` casts each source hidden state to the connection's dtype, and
the block outputs the connections are added to come out of a quantized layer in its compute dtype
(the run's :class:`~solo_cli.engine.precision.Precision` dtype), so nothing else changes.

- ``nf4`` / ``fp4``: bitsandbytes 4-bit (QLoRA's NormalFloat, or plain 4-bit float), computing in
  the run's dtype, one way in every mode and on every CPU (:func:`one_4bit_kernel`). bitsandbytes packs
  weights in blocks of 64: a layer narrower than that stays full precision. Their parameters count their
  weights, not their packed bytes (:func:`count_params`).
- ``int8``: bitsandbytes LLM.int8() (8-bit weights, outlier columns in float16).
- ``torchao-int8``: torchao int8 weight-only (``Int8WeightOnlyConfig``).

A model whose ``config.json`` already has a ``quantization_config`` (GPTQ, AWQ, bitsandbytes,
compressed-tensors, ...) loads as it is, through transformers, and ``--quantize`` other than none
on it is refused. This module imports neither torch nor transformers until a function needs them:
``training/config.py`` (which must stay torch-free) takes :data:`QUANTIZE_CHOICES` from it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
import warnings
from dataclasses import dataclass

from ..errors import UsageError, first_line, param

QUANTIZE_CHOICES = ("none", "nf4", "fp4", "int8", "torchao-int8")


@dataclass(frozen=True)
class Backend:
    """The package a ``--quantize`` choice runs on, and where it runs."""

    package: str  # the import name, which is also its PyPI name
    extra: str  # pyproject.toml's extra that installs it
    devices: tuple[str, ...]  # torch device types it quantizes on
    minimum: str  # the oldest release tested (the extra's lower bound)


BITSANDBYTES = Backend("bitsandbytes", "solo-cli[quantize]", ("cuda", "cpu", "xpu"), "0.50")  # CPU kernels: 0.50
# Its own extra: once torchao is installed, transformers imports it on every model load (seconds), quantized or not.
TORCHAO = Backend("torchao", "solo-cli[torchao]", ("cuda", "cpu"), "0.18")
BACKENDS = {"nf4": BITSANDBYTES, "fp4": BITSANDBYTES, "int8": BITSANDBYTES, "torchao-int8": TORCHAO}


def installed(package: str) -> bool:
    """Whether ``package`` can be imported here (without importing it: both backends are slow to import)."""
    return importlib.util.find_spec(package) is not None


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_backend(quantize: str, device_type: str) -> None:
    """Refuse, in one line naming what to install or which device to use, a ``--quantize`` that cannot run here."""
    if quantize == "none":
        return
    if quantize not in BACKENDS:
        raise UsageError(f"{param('quantize')} {quantize!r}: use one of {', '.join(QUANTIZE_CHOICES)}")
    backend, flag = BACKENDS[quantize], f"{param('quantize')} {quantize}"
    install = f"`pip install '{backend.extra}'` (or `pip install '{backend.package}>={backend.minimum}'`)"
    if not installed(backend.package):
        raise UsageError(f"{flag} needs {backend.package}, which is not installed; install it with {install}")
    if device_type not in backend.devices:
        raise UsageError(
            f"{flag}: {backend.package} does not quantize on {device_type}; "
            f"use {param('device')} {' or '.join(backend.devices[:2])}, or {param('quantize')} none"
        )
    found = importlib.metadata.version(backend.package)
    if _version_tuple(found) < _version_tuple(backend.minimum):
        raise UsageError(f"{flag} needs {backend.package} {backend.minimum} or newer (found {found}); upgrade it with {install}")


def quantization_config(quantize: str, compute_dtype):
    """The ``quantization_config`` transformers loads the base with (None for ``none``); ``compute_dtype`` is a torch dtype."""
    if quantize == "none":
        return None
    if quantize == "torchao-int8":
        from torchao.quantization import Int8WeightOnlyConfig
        from transformers import TorchAoConfig

        return TorchAoConfig(Int8WeightOnlyConfig())
    from transformers import BitsAndBytesConfig

    if quantize == "int8":
        # LLM.int8() casts a float32 or bfloat16 input to float16 for its matmul and warns on every layer.
        warnings.filterwarnings("ignore", message="MatMul8bitLt: inputs will be cast from")
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quantize, bnb_4bit_compute_dtype=compute_dtype)


def prequantized(config) -> str | None:
    """What an already quantized model's weights are (``nf4``, ``int8``, ``gptq``, ``awq``, ...), from its
    config's ``quantization_config``; None for a model that is not quantized."""
    quant = getattr(config, "quantization_config", None)
    if quant is None:
        return None
    if not isinstance(quant, dict):
        quant = quant.to_dict() if hasattr(quant, "to_dict") else vars(quant)
    method = quant.get("quant_method") or "unknown"
    method = str(getattr(method, "value", method))  # QuantizationMethod is a str Enum
    if method == "bitsandbytes":
        if quant.get("load_in_4bit"):
            return str(quant.get("bnb_4bit_quant_type") or "fp4")
        return "int8"
    return method


def logical_numel(tensor) -> int:
    """How many weights ``tensor`` stands for. A bitsandbytes 4-bit weight (``Params4bit``) stores two in a byte, so
    its ``numel()`` counts the packed storage; its quantization state keeps the weight's shape (peft counts it so)."""
    shape = getattr(getattr(tensor, "quant_state", None), "shape", None)
    if shape is not None:
        return math.prod(shape)
    if type(tensor).__name__ == "Params4bit":  # not quantized yet, or its state lost: two a byte of storage
        return tensor.numel() * 2 * tensor.element_size()
    return tensor.numel()


def count_params(module) -> int:
    """``module``'s parameters as the model defines them (a 4-bit weight counts its weights, not its bytes)."""
    return sum(logical_numel(p) for p in module.parameters())


def one_4bit_kernel(model) -> int:
    """Make every bitsandbytes 4-bit layer of ``model`` compute one way, whatever the mode; returns how many it set.

    On a CPU with AVX512-BF16, bitsandbytes (0.50) repacks a ``Linear4bit``'s weight into a CPU layout the
    first time it runs in eval mode on an input that needs no gradient, and from then on multiplies in
    bfloat16 with another kernel. Solo's base is always in eval mode, and a block below the lowest
    destination (or validation, or generation) sees such inputs, so the numbers would depend on which
    forward ran first, on the CPU, and on ``--parallel`` (FSDP would shard the repacked bytes, which
    bitsandbytes then cannot read back: ``fix_4bit_weight_quant_state_from_module`` asserts). With the
    layer's own switch off, every forward dequantizes and multiplies in the compute dtype, on every CPU.
    """
    layers = [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def refuse_requantizing(name: str, found: str, quantize: str) -> None:
    """``--quantize`` on a model that is already quantized: one line, since its weights cannot be quantized twice."""
    if quantize != "none":
        raise UsageError(
            f"{param('model')} {name}: is already quantized ({found}) and loads as it is; "
            f"drop {param('quantize')} {quantize} (or pass {param('quantize')} none), or pass a full-precision model"
        )


def load_failure(name: str, quantize: str, exc: Exception, *, came_quantized: bool) -> UsageError:
    """A quantized load that transformers or its backend refused (a package missing, no kernel for this device): one line."""
    first = first_line(exc)
    if came_quantized:
        return UsageError(
            f"{param('model')} {name}: is quantized with {quantize}, which cannot load here ({first}); "
            "install the package it names, or pass a full-precision model"
        )
    return UsageError(
        f"{param('quantize')} {quantize}: {BACKENDS[quantize].package} cannot load {name} here ({first}); "
        f"install or upgrade it with `pip install '{BACKENDS[quantize].extra}'`, or pass {param('quantize')} none"
    )


def compatibility_note(trained: str, loaded: str) -> str | None:
    """The note for an adapter trained over one quantization of its base and attached to another (same architecture)."""
    if trained == loaded:
        return None
    over = "the full-precision base" if trained == "none" else f"the base quantized to {trained}"
    now = "the full-precision base" if loaded == "none" else f"the base quantized to {loaded}"
    return f"note: the adapter was trained over {over} and runs here on {now} (same architecture); outputs may differ slightly"
