"""An adapter file's tensors as numpy arrays, each checked against the header, without torch.

:func:`read_arrays` is the one reader of adapter tensors: ``solo inspect`` computes its norms from
the arrays, and :func:`solo_cli.engine.adapter_file.load_adapter` builds the adapter from them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from ..errors import UsageError
from .adapter_config import tensor_shapes
from .adapter_header import AdapterInfo, read_info, resolve_adapter_path

# safetensors' dtype codes, named as torch names them (the names in solo's error messages)
_DTYPE_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}
FLOAT_DTYPES = ("F32", "BF16", "F16")


def _tensor_table(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """Every tensor's dtype code, shape and bytes, in the file's order (safetensors checks the layout first)."""
    try:
        with safe_open(str(path), framework="numpy") as handle:  # refuses overlapping or out-of-file offsets
            keys = list(handle.keys())
        raw = path.read_bytes()
        size = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8 : 8 + size])
        table = {}
        for key in keys:
            entry = header[key]
            start, end = (8 + size + offset for offset in entry["data_offsets"])
            table[key] = (entry["dtype"], tuple(entry["shape"]), raw[start:end])
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"adapter {path}: tensors cannot be read ({exc}); the file is damaged") from None
    return table


def _as_float32(code: str, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 copy of a float32, float16 or bfloat16 tensor's bytes (exact: every value is representable)."""
    if code == "BF16":  # numpy has no bfloat16: its bits are the top half of a float32's
        values = (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        values = np.frombuffer(data, dtype="<f4" if code == "F32" else "<f2").astype(np.float32)
    return values.reshape(shape)


def read_arrays(path: str | os.PathLike) -> tuple[AdapterInfo, dict[str, np.ndarray]]:
    """The checked header and every tensor as a float32 array, named as in ``SoloAdapter.state_dict()``.

    Names and shapes are checked against the header before any tensor is converted; a tensor that
    is not a finite float (NaN, inf, or an integer dtype) is refused as damage, naming it. Every
    problem of a kind is reported in one :class:`UsageError` naming the file.
    """
    info = read_info(path)
    path = resolve_adapter_path(path)
    table = _tensor_table(path)
    expected = tensor_shapes(info.config)
    problems = [f"missing {k}" for k in expected if k not in table]
    problems += [f"unexpected {k}" for k in table if k not in expected]
    problems += [
        f"{k} has shape {table[k][1]}, expected {shape}" for k, shape in expected.items() if k in table and table[k][1] != shape
    ]
    if problems:
        raise UsageError(f"adapter {path}: tensors do not match its header: {'; '.join(problems)}")
    arrays, damaged = {}, []
    for key, (code, shape, data) in table.items():
        if code not in FLOAT_DTYPES:
            name = _DTYPE_NAMES.get(code, code.lower())
            damaged.append(f"tensor {key} is {name}, not float32/bfloat16/float16")
            continue
        arrays[key] = _as_float32(code, data, shape)
        if not np.isfinite(arrays[key]).all():
            damaged.append(f"tensor {key} holds NaN or infinite values")
    if damaged:
        more = f" (and {len(damaged) - 3} more)" if len(damaged) > 3 else ""
        raise UsageError(
            f"adapter {path}: {'; '.join(damaged[:3])}{more}; the file is damaged, re-train it or use an intact copy"
        )
    return info, arrays
