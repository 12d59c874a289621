"""The training loss, computed only where it is needed.

The vocabulary projection is the most expensive single layer of a small LM (49k x 576 for
SmolLM2). Prompt tokens carry no loss, so the projection runs only on the hidden states of the
positions that predict a trained token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _fast_path(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """``(body, head)`` when the logits are exactly ``head(body(...).last_hidden_state)``."""
    config = getattr(model, "config", None)
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    body = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if body is None or body is model or not isinstance(head, nn.Linear):
        return None
    return body, head


def causal_lm_loss(model: nn.Module, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over the trained tokens of ``batch``; returns (loss, tokens)."""
    targets = batch["labels"][:, 1:]
    keep = targets != -100
    count = int(keep.sum())
    fast = _fast_path(model)
    if fast is not None:
        body, head = fast
        hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).last_hidden_state
        logits = head(hidden[:, :-1][keep])
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits[:, :-1][keep]
    loss = F.cross_entropy(logits.float(), targets[keep], label_smoothing=label_smoothing, reduction="sum")
    return loss / max(1, count), count
