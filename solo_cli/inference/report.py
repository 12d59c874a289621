"""What an adapter file holds, for `solo inspect ADAPTER`: read without torch or a model, so it is instant.

The plan costs of `solo inspect --model` are :mod:`solo_cli.training.plan_cost`.
"""

from __future__ import annotations

import numpy as np

from ..engine.adapter_arrays import read_arrays
from ..engine.adapter_config import connection_key
from ..engine.adapter_header import resolve_adapter_path


def _factor_norm(A: np.ndarray, B: np.ndarray, gate: float) -> float:
    """Frobenius norm of ``gate * B A`` via the r x r Gram matrices (never forms the d x d map)."""
    gram = (B.T @ B) * (A @ A.T)
    return abs(gate) * float(np.sqrt(max(float(gram.sum()), 0.0)))


def adapter_report(path) -> dict:
    """Connections, gate values, parameter counts and map norms of an adapter file."""
    path = resolve_adapter_path(path)
    info, arrays = read_arrays(path)  # checks every tensor against the header
    rows, total = [], 0
    for src, dst in info.config.connections:
        prefix = f"connections.{connection_key(src, dst)}"
        A, B = arrays[f"{prefix}.A"], arrays[f"{prefix}.B"]
        gate = float(arrays[f"{prefix}.gate"]) if f"{prefix}.gate" in arrays else 1.0
        params = A.size + B.size + (1 if info.config.gate == "learned" else 0)
        total += params
        rows.append(
            {
                "source": src,
                "destination": dst,
                "span": dst - src,
                "rank": A.shape[0],
                "gate": gate,
                "params": params,
                "norm": _factor_norm(A, B, gate),
            }
        )
    return {
        "path": str(path),
        "format_version": info.format_version,
        "solo_version": info.solo_version,
        "gate_mode": info.config.gate,
        "homotopy_steps": info.config.homotopy_steps,
        "source_norm": info.config.source_norm,
        "rank": info.config.rank,
        "connections": rows,
        "trainable_params": total,
        "file_bytes": path.stat().st_size,
        "base_model": info.base_model,
        "base_revision": info.base_revision,
        "fingerprint": info.fingerprint.to_dict(),
        "data_format": info.data_format,
        "chat_template": info.chat_template,
        "training": info.training,
    }
