"""How much faster bf16 runs than float32 on this CPU: one matmul, timed once per machine and kept.

``--dtype auto`` picks bf16 on a CPU only where this measurement shows it faster
(:mod:`solo_cli.engine.precision`). A timing taken while the machine is busy can come out either
side of the threshold, and a decision that flips between runs makes two runs of one command train
in different dtypes (different losses, and a resume that continues in another dtype than it
started). So the first measurement on a machine is kept in ``auto-dtype.json`` in solo's cache
folder (``$SOLO_CACHE``, else ``~/.cache/solo``), keyed by the CPU model, its feature flags and
torch's version, and every later run reads it. Deleting the file measures again.

What is measured is one matmul of :data:`CALIBRATION_SHAPE` (one MLP projection of the built-in
model), not a training step: attention, norms, casts and the float32 connections do not speed up
with it, so a whole run gains much less than this ratio.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..files.atomic import write_json

CALIBRATION_SHAPE = (1024, 576, 1536)  # (tokens, d_model, d_ff): one MLP projection of the built-in model
CACHE_FILE = "auto-dtype.json"


@dataclass(frozen=True)
class Measurement:
    """bf16 over float32 throughput of one :data:`CALIBRATION_SHAPE` matmul on this machine, and where it is kept."""

    speedup: float
    kept_in: Path | None  # the cache file that holds it; None where that could not be written
    cached: bool  # read from the cache (an earlier run measured it), not measured by this process

    def summary(self) -> str:
        """What was measured, for what, and where it is kept: the start line's account of ``auto``."""
        m, k, n = CALIBRATION_SHAPE
        what = f"one {m}x{k}x{n} matmul ran {self.speedup:.2f}x as fast in bf16 as in float32"
        if self.kept_in is None:
            return f"{what} (measured now; not kept: the solo cache folder is not writable, so another run may measure otherwise)"
        when = "measured by an earlier run" if self.cached else "measured now"
        return f"{what} ({when}, kept for this machine in {self.kept_in}; delete it to measure again)"


def machine_key(cpu_model: str, cpu_flags: frozenset[str], torch_version: str) -> str:
    """What a kept measurement belongs to: the same CPU model, flags and torch give the same kernels."""
    text = json.dumps([cpu_model, sorted(cpu_flags), torch_version])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _seconds(a: torch.Tensor, b: torch.Tensor) -> float:
    tick = time.perf_counter()
    a @ b
    return time.perf_counter() - tick


def time_matmuls(repeats: int = 5) -> float:
    """bf16 over float32 throughput of one :data:`CALIBRATION_SHAPE` matmul, timed now (about 0.1-0.2 s on 2 cores).

    After a warm-up of each (the first call picks and prepares the kernel) the two are timed in
    turns, ``repeats`` times each, and the best of each is compared, so contention that comes and
    goes does not favour either.
    """
    m, k, n = CALIBRATION_SHAPE
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
    a16, b16 = a.bfloat16(), b.bfloat16()
    a @ b, a16 @ b16
    fp32 = bf16 = float("inf")
    for _ in range(repeats):
        fp32 = min(fp32, _seconds(a, b))
        bf16 = min(bf16, _seconds(a16, b16))
    return fp32 / bf16


def _cache_file() -> Path:
    # solo's cache folder, as engine.models.cache_dir names it (models imports precision, which imports this module)
    return Path(os.environ.get("SOLO_CACHE") or Path.home() / ".cache" / "solo") / CACHE_FILE


def _read(path: Path) -> dict:
    """The kept measurements; an unreadable or malformed file counts as empty (it is rewritten)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _kept_speedup(entry) -> float | None:
    speedup = entry.get("bf16_speedup") if isinstance(entry, dict) else None
    valid = isinstance(speedup, (int, float)) and not isinstance(speedup, bool) and math.isfinite(speedup) and speedup > 0
    return float(speedup) if valid else None


@functools.cache
def measure(cpu_model: str, cpu_flags: frozenset[str]) -> Measurement:
    """This machine's kept measurement, or one measured now (:func:`time_matmuls`) and kept.

    Once per process either way, so that every decision of one run agrees even where nothing can be kept.
    """
    path, key = _cache_file(), machine_key(cpu_model, cpu_flags, torch.__version__)
    kept = _read(path)
    speedup = _kept_speedup(kept.get(key))
    if speedup is not None:
        return Measurement(speedup, path, cached=True)
    speedup = round(time_matmuls(), 4)  # as kept: this run and later ones compare one number
    kept[key] = {
        "cpu": cpu_model,
        "torch": torch.__version__,
        "shape": list(CALIBRATION_SHAPE),
        "bf16_speedup": speedup,
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, kept)
    except OSError:
        return Measurement(speedup, None, cached=False)
    return Measurement(speedup, path, cached=False)
