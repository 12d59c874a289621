"""``--dtype auto``: bfloat16 where this hardware really runs it faster than float32, else float32.

The choice is the base model's weight dtype. The adapter's connections stay float32 whatever the
base runs in (``modeling_solo`` casts each source to the connection's dtype), so A, B and the
optimizer state are full precision either way. bf16 weights rather than float32 weights under
autocast: they halve the base's memory and skip autocast's per-op casts (a SmolLM2 training step
on a 2-core AVX512-BF16 Xeon took 4.45 s with bf16 weights, 4.72 s under autocast).

- CUDA with native bf16 (Ampere and newer): bfloat16.
- A CPU: bfloat16 only if it has native bf16 arithmetic (AMX-BF16 or AVX512-BF16, from
  ``/proc/cpuinfo`` and torch's CPU capability; ``bf16`` on Arm) *and* a short calibration (one
  representative matmul in float32 and in bfloat16, :mod:`solo_cli.engine.calibration`) shows
  bf16 at least :data:`MIN_SPEEDUP` times as fast. Without AMX, oneDNN's AVX512-BF16 kernels are
  often slower than MKL's float32 ones; the calibration catches that. It runs once per machine
  (CPU model, flags, torch version) and is kept in solo's cache folder, so ``auto`` makes the
  same choice on every run there.
- MPS and anything else: float32.

What bf16 (or float16, or bf16 autocast) gives up is said at the start of every such run
(:meth:`Precision.exactness`): the adapter, its gradients and optimizer state stay float32 and a
run repeats and resumes as exactly as in float32, but the base's own arithmetic rounds each result
to about 3 significant digits (float16: 4), so anything that changes the shapes it computes on
(splitting a batch over processes, the prompts batched together for generation) changes the
rounding, far beyond float32's.

The same :class:`Precision` also says how training computes with that base, so that one decision
holds everywhere (model loading, the trainer, config.json): a float16 base trains with a
GradScaler (float16 gradients underflow without loss scaling), and a float32 base on a CUDA GPU
with *native* bf16 runs its training forward under bf16 autocast (never on emulated bf16: T4,
V100). Nothing else reads ``--dtype`` to decide precision.

``--quantize`` (nf4, fp4, int8, torchao-int8) is part of the same decision: :func:`resolve_precision`
checks its backend can run here and :class:`Precision` carries it to model loading
(:mod:`solo_cli.engine.quantization`), where the precision's dtype becomes the quantized layers'
compute dtype.

:func:`choose` is the pure decision (hardware facts and a speed-up measurement in, a
:class:`Precision` out), so tests inject the facts; :func:`resolve_precision` gathers them.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UsageError
from . import calibration
from .calibration import Measurement
from .choices import COMPUTE_DTYPES, DTYPE_CHOICES
from .quantization import BACKENDS, check_backend

PIN_VARIABLE = "SOLO_AUTO_DTYPE"
MIN_SPEEDUP = 1.2  # bf16 must beat float32 by this much: a tie is not worth bf16's rounding
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # x86 (AMX, AVX512) and Arm (FEAT_BF16) cpuinfo flags


@dataclass(frozen=True)
class Precision:
    """How a run computes, decided once by :func:`resolve_precision` (shown at the start of training, kept in config.json).

    ``dtype`` is what the base's weights are loaded in; ``autocast`` the dtype the training
    forward runs under autocast (None: none); ``grad_scaler`` whether training scales the loss.
    ``quantize`` is what the base's linear weights are (:mod:`solo_cli.engine.quantization`):
    ``none``, a ``--quantize`` choice (nf4, fp4, int8, torchao-int8; ``dtype`` is then their
    compute dtype) or, for a model that came quantized, its method (gptq, awq, ...), which model
    loading sets. The adapter and its optimizer state are float32 whatever these say.
    """

    dtype: str  # float32, bfloat16 or float16
    reason: str
    autocast: str | None = None  # bfloat16 for a float32 base on a GPU with native bf16
    grad_scaler: bool = False  # a float16 base: its gradients need loss scaling
    quantize: str = "none"  # the base's linear weights: none, nf4, fp4, int8, torchao-int8, or a pre-quantized method

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def exactness(self) -> str | None:
        """What this precision does not guarantee that float32 does, in one line (None: float32 keeps every guarantee)."""
        half = self.autocast or (self.dtype if self.dtype != "float32" else None)
        if half is None:
            return None
        remedy = "" if self.autocast else "; --dtype float32 keeps both"  # a float32 base on such a GPU autocasts anyway
        return (
            f"exactness in {half}: the adapter and its optimizer state stay float32, and a rerun or --resume repeats "
            f"the run as in float32, but the base rounds to {half}: N processes and 1 give adapters equal only to that "
            f"rounding, and a prompt's greedy text can change with the prompts batched beside it{remedy} "
            "(docs/troubleshooting.md: Exactness)"
        )


@dataclass(frozen=True)
class Agreement:
    """How the processes of a distributed run agree on ``auto``: the first decides, every other takes its choice
    (each measuring for itself could choose differently, and the processes must compute alike)."""

    first: bool  # this process decides
    total: Callable[[float], float]  # the sum of one number over all processes


@dataclass(frozen=True)
class Hardware:
    """What decides ``auto``: the device kind and, on a CPU, its instruction sets."""

    device_type: str  # cpu, cuda, mps, ...
    cuda_bf16: bool = False  # the GPU runs bf16 natively (not emulated)
    cpu_flags: frozenset[str] = frozenset()
    cpu_capability: str = ""  # torch.backends.cpu.get_cpu_capability(): AVX512, AVX2, ...
    cpu_model: str = ""  # /proc/cpuinfo's model name: with the flags, what a kept calibration belongs to

    def native_cpu_bf16(self) -> str | None:
        """The flag that says this CPU does bf16 arithmetic natively, or None."""
        found = [f for f in NATIVE_BF16_FLAGS if f in self.cpu_flags]
        if found:
            return found[0]
        return "amx" if "AMX" in self.cpu_capability.upper() else None


def choose(hardware: Hardware, measured: Callable[[], Measurement]) -> Precision:
    """``auto`` on ``hardware``; ``measured()`` (bf16 against float32, :mod:`solo_cli.engine.calibration`) is called
    only on a CPU with native bf16."""
    kind = hardware.device_type
    if kind == "cuda":
        if hardware.cuda_bf16:
            return Precision("bfloat16", "bfloat16: this GPU runs bf16 natively")
        return Precision("float32", "float32: this GPU has no native bf16")
    if kind != "cpu":
        return Precision("float32", f"float32: bf16 is not used on {kind}")
    flag = hardware.native_cpu_bf16()
    if flag is None:
        return Precision("float32", "float32: this CPU has no native bf16 (no AMX or AVX512-BF16)")
    measurement = measured()
    if measurement.speedup >= MIN_SPEEDUP:
        return Precision("bfloat16", f"bfloat16 on this CPU ({flag}): {measurement.summary()}")
    return Precision("float32", f"float32 (bf16 needs {MIN_SPEEDUP}x) on this CPU ({flag}): {measurement.summary()}")


def _cpuinfo(cpuinfo: Path) -> dict[str, str]:
    """The first processor's ``key: value`` lines of ``/proc/cpuinfo``; empty where unreadable."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``); empty where unreadable."""
    fields = _cpuinfo(cpuinfo)
    return frozenset((fields.get("flags") or fields.get("Features") or "").split())


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (x86 ``model name``, Arm ``Model`` or its part number), else what Python knows."""
    fields = _cpuinfo(cpuinfo)
    arm = " ".join(fields[k] for k in ("CPU implementer", "CPU part") if k in fields)
    return fields.get("model name") or fields.get("Model") or arm or platform.processor() or platform.machine()


def _cuda_bf16(device: torch.device) -> bool:
    if not torch.cuda.is_available():
        return False
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch: no emulation argument; fall back to the compute capability
        return torch.cuda.get_device_capability(device)[0] >= 8


def detect(device: str | torch.device) -> Hardware:
    """The facts :func:`choose` needs about ``device`` on this machine."""
    device = torch.device(device)
    if device.type == "cuda":
        return Hardware("cuda", cuda_bf16=_cuda_bf16(device))
    if device.type != "cpu":
        return Hardware(device.type)
    capability = torch.backends.cpu.get_cpu_capability()
    return Hardware("cpu", cpu_flags=cpu_flags(), cpu_capability=capability, cpu_model=cpu_model())


def measure_cpu(hardware: Hardware) -> Measurement:
    """bf16 against float32 on this CPU: kept from an earlier run on this machine, or measured now and kept."""
    return calibration.measure(hardware.cpu_model, hardware.cpu_flags)


def _load_dtype(name: str, device: torch.device, hardware: Hardware | None, agreement: Agreement | None) -> Precision:
    """The weights' dtype for ``--dtype name`` (``auto``: by the pin, else by the hardware and measurement)."""
    if name != "auto":
        return Precision(name, f"{name}: as asked")
    pinned = os.environ.get(PIN_VARIABLE)
    if pinned:
        if pinned not in COMPUTE_DTYPES:
            raise UsageError(f"{PIN_VARIABLE}={pinned}: use float32, bfloat16 or float16, or unset it")
        return Precision(pinned, f"{pinned}: {PIN_VARIABLE} pins auto")  # pinned: every process agrees already
    if agreement is None or agreement.first:
        found = hardware or detect(device)
        mine = choose(found, lambda: measure_cpu(found))
        if agreement is None:
            return mine
    else:
        mine = None
    index = agreement.total(float(DTYPE_CHOICES.index(mine.dtype)) if mine else 0.0)
    chosen = DTYPE_CHOICES[round(index)]
    return mine or Precision(chosen, f"{chosen}: as the first process chose for auto")


def _training_precision(load: Precision, device: torch.device, hardware: Hardware | None) -> Precision:
    """``load`` with how training computes on it: loss scaling for float16, bf16 autocast for float32 on native-bf16 CUDA."""
    if load.dtype == "float16":
        return Precision(load.dtype, f"{load.reason}; float16 loss scaling", grad_scaler=True)
    if load.dtype == "float32" and device.type == "cuda" and (hardware or detect(device)).cuda_bf16:
        return Precision(load.dtype, f"{load.reason}; training runs under bf16 autocast (native bf16 GPU)", "bfloat16")
    return load


def _quantized(precision: Precision, quantize: str, device: torch.device) -> Precision:
    """``precision`` over a base quantized to ``quantize`` (its backend checked for ``device`` first)."""
    if quantize == "none":
        return precision
    check_backend(quantize, device.type)
    reason = f"{precision.reason}; base quantized to {quantize} ({BACKENDS[quantize].package}), computing in {precision.dtype}"
    return dataclasses.replace(precision, reason=reason, quantize=quantize)


def resolve_precision(
    name: str,
    device: str | torch.device = "cpu",
    *,
    quantize: str = "none",
    hardware: Hardware | None = None,
    agreement: Agreement | None = None,
) -> Precision:
    """How a run computes for ``--dtype name`` and ``--quantize quantize`` on ``device``: the weights' dtype (``auto``
    decides by hardware and measurement), their quantization, training autocast and loss scaling.

    A ``quantize`` whose backend is not installed, or does not run on ``device``, is refused here
    in one line (:func:`solo_cli.engine.quantization.check_backend`), before anything loads.

    ``SOLO_AUTO_DTYPE=float32`` (or bfloat16, float16) pins what ``auto`` means, for runs that
    must compute alike on every machine and every try (the test suite sets it). ``hardware``
    replaces what :func:`detect` would find (tests inject it); with ``agreement`` (a distributed
    run) the first process decides ``auto`` for all. The hardware is probed only for ``auto`` and
    for float32 on CUDA.
    """
    device = torch.device(device)
    precision = _training_precision(_load_dtype(name, device, hardware, agreement), device, hardware)
    return _quantized(precision, quantize, device)
