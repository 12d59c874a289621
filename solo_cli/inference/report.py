"""Parameter reports for `solo inspect`: what an adapter file holds, and what a plan would cost.

Reading an adapter needs no model. Costing a plan builds the model on the meta device from its
config, so no weights are read either.
"""

from __future__ import annotations

import torch
from torch import nn

from ..engine.adapter_file import load_adapter, resolve_adapter_path
from ..engine.blocks import find_blocks, fingerprint
from ..engine.topology import format_connections, parse_connections


def _factor_norm(A: torch.Tensor, B: torch.Tensor, gate: float) -> float:
    """Frobenius norm of ``gate * B A`` via the r x r Gram matrices (never forms the d x d map)."""
    gram = (B.t() @ B) * (A @ A.t())
    return abs(gate) * float(gram.sum().clamp_min(0).sqrt())


def adapter_report(path) -> dict:
    """Connections, gate values, parameter counts and map norms of an adapter file."""
    path = resolve_adapter_path(path)
    adapter, info = load_adapter(path)  # checks every tensor against the header
    rows, total = [], 0
    for (src, dst), conn in adapter.items():
        A, B, gate = conn.A.detach(), conn.B.detach(), conn.gate_value()
        params = A.numel() + B.numel() + (1 if info.config.gate == "learned" else 0)
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


def _in_out(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    weight = module.weight  # transformers' Conv1D (GPT-2) stores (in, out)
    return weight.shape[0], weight.shape[1]


def lora_qv_params(blocks: nn.ModuleList, rank: int = 4) -> int | None:
    """Trainable parameters of LoRA at ``rank`` on the query and value projections (Hu et al. 2021).

    Fused projections (GPT-2's c_attn, GPT-NeoX's query_key_value) count their q and v thirds,
    which is how LoRA's own GPT-2 runs adapt them. ``None`` if the layout is not recognised.
    """
    total = 0
    for block in blocks:
        named = {name.rsplit(".", 1)[-1]: m for name, m in block.named_modules() if hasattr(m, "weight")}
        pairs = [("q_proj", "v_proj"), ("query", "value"), ("q", "v")]
        found = next(((named[q], named[v]) for q, v in pairs if q in named and v in named), None)
        if found:
            total += sum(rank * sum(_in_out(m)) for m in found)
            continue
        fused = named.get("c_attn") or named.get("query_key_value") or named.get("qkv_proj")
        if fused is None:
            return None
        d_in, d_out = _in_out(fused)
        total += 2 * rank * (d_in + d_out // 3)
    return total


def plan_report(
    model_name: str, spec: str, rank: int, gate: str = "schedule", revision: str | None = None, trust_remote_code: bool = False
) -> dict:
    """The model's blocks and what a connection plan costs, beside LoRA r=4 on q and v."""
    from transformers import AutoModelForCausalLM

    from ..engine.models import load_config

    config = load_config(model_name, revision, trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    fp = fingerprint(model)
    path, blocks = find_blocks(model)
    connections = parse_connections(spec, fp.num_blocks)
    per_connection = 2 * fp.hidden_size * rank + (1 if gate == "learned" else 0)
    solo_total = per_connection * len(connections)
    lora = lora_qv_params(blocks, 4)
    lowest = min(j for _, j in connections)
    return {
        "model": model_name,
        "fingerprint": fp.to_dict(),
        "blocks_path": path,
        "block_class": type(blocks[0]).__name__,
        "block_params": sum(p.numel() for p in blocks[0].parameters()),
        "total_params": sum(p.numel() for p in model.parameters()),
        "plan": {
            "connections": format_connections(connections),
            "count": len(connections),
            "rank": rank,
            "gate": gate,
            "params_per_connection": per_connection,
            "trainable_params": solo_total,
            "lowest_destination": lowest,
            "blocks_with_backward": fp.num_blocks - lowest,
        },
        "lora_qv_r4": {
            "trainable_params": lora,
            "blocks_with_backward": fp.num_blocks,
        },
        "ratio_to_lora": (solo_total / lora) if lora else None,
    }
