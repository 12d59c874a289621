"""``--dtype auto``: bfloat16 where this hardware really runs it faster than float32, else float32.

The choice is the base model's weight dtype. The adapter's connections stay float32 whatever the
base runs in (``modeling_solo`` casts each source to the connection's dtype), so A, B and the
optimizer state are full precision either way. bf16 weights rather than float32 weights under
autocast: they halve the base's memory and skip autocast's per-op casts (a SmolLM2 training step
on a 2-core AVX512-BF16 Xeon took 4.45 s with bf16 weights, 4.72 s under autocast).

- CUDA with native bf16 (Ampere and newer): bfloat16.
- A CPU: bfloat16 only if it has native bf16 arithmetic (AMX-BF16 or AVX512-BF16, from
  ``/proc/cpuinfo`` and torch's CPU capability; ``bf16`` on Arm) *and* a short calibration (one
  representative matmul in float32 and in bfloat16, a few tens of ms, once per process) shows
  bf16 at least :data:`MIN_SPEEDUP` times as fast. Without AMX, oneDNN's AVX512-BF16 kernels are
  often slower than MKL's float32 ones; the calibration catches that.
- MPS and anything else: float32.

:func:`choose` is the pure decision (hardware facts and a speed-up measurement in, a
:class:`Precision` out), so tests inject the facts; :func:`resolve_precision` gathers them.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UsageError

DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")
PIN_VARIABLE = "SOLO_AUTO_DTYPE"
MIN_SPEEDUP = 1.2  # bf16 must beat float32 by this much: a tie is not worth bf16's rounding
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16", "bf16")  # x86 (AMX, AVX512) and Arm (FEAT_BF16) cpuinfo flags
CALIBRATION_SHAPE = (1024, 576, 1536)  # (tokens, d_model, d_ff): one MLP projection of the built-in model


@dataclass(frozen=True)
class Precision:
    """The dtype a model is loaded in, and why (shown at the start of training, kept in config.json)."""

    dtype: str  # float32, bfloat16 or float16
    reason: str

    def to_dict(self) -> dict:
        return {"dtype": self.dtype, "reason": self.reason}


@dataclass(frozen=True)
class Hardware:
    """What decides ``auto``: the device kind and, on a CPU, its instruction sets."""

    device_type: str  # cpu, cuda, mps, ...
    cuda_bf16: bool = False  # the GPU runs bf16 natively (not emulated)
    cpu_flags: frozenset[str] = frozenset()
    cpu_capability: str = ""  # torch.backends.cpu.get_cpu_capability(): AVX512, AVX2, ...

    def native_cpu_bf16(self) -> str | None:
        """The flag that says this CPU does bf16 arithmetic natively, or None."""
        found = [f for f in NATIVE_BF16_FLAGS if f in self.cpu_flags]
        if found:
            return found[0]
        return "amx" if "AMX" in self.cpu_capability.upper() else None


def choose(hardware: Hardware, speedup: Callable[[], float]) -> Precision:
    """``auto`` on ``hardware``; ``speedup()`` (bf16 over float32 throughput) is called only on a CPU with native bf16."""
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
    ratio = speedup()
    if ratio >= MIN_SPEEDUP:
        return Precision("bfloat16", f"bfloat16: bf16 measured {ratio:.2f}x of float32 on this CPU ({flag})")
    return Precision("float32", f"float32: bf16 measured {ratio:.2f}x of float32 on this CPU ({flag})")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``); empty where unreadable."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


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
    return Hardware("cpu", cpu_flags=cpu_flags(), cpu_capability=torch.backends.cpu.get_cpu_capability())


def _best_seconds(a: torch.Tensor, b: torch.Tensor, repeats: int) -> float:
    a @ b  # warm-up: the first call picks and prepares the kernel
    best = float("inf")
    for _ in range(repeats):
        tick = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - tick)
    return best


@functools.cache
def calibrate_cpu(repeats: int = 5) -> float:
    """bf16 over float32 throughput of one representative matmul on this CPU (cached per process).

    The two are timed in turns, ``repeats`` times each after a warm-up, and the best of each is
    compared, so contention that comes and goes does not favour either; about 0.1-0.2 s on 2 cores.
    """
    m, k, n = CALIBRATION_SHAPE
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
    a16, b16 = a.bfloat16(), b.bfloat16()
    fp32 = bf16 = float("inf")
    for _ in range(repeats):
        fp32 = min(fp32, _best_seconds(a, b, 1))
        bf16 = min(bf16, _best_seconds(a16, b16, 1))
    return fp32 / bf16


def resolve_precision(name: str, device: str | torch.device = "cpu") -> Precision:
    """The dtype to load a model in for ``--dtype name`` on ``device``; ``auto`` decides by hardware and measurement.

    ``SOLO_AUTO_DTYPE=float32`` (or bfloat16, float16) pins what ``auto`` means, for runs that
    must compute alike on every machine and every try (the test suite sets it).
    """
    if name != "auto":
        return Precision(name, f"{name}: as asked")
    pinned = os.environ.get(PIN_VARIABLE)
    if pinned:
        if pinned not in DTYPE_CHOICES[1:]:
            raise UsageError(f"{PIN_VARIABLE}={pinned}: use float32, bfloat16 or float16, or unset it")
        return Precision(pinned, f"{pinned}: {PIN_VARIABLE} pins auto")
    return choose(detect(device), calibrate_cpu)
