"""The training loss, computed only where it is needed.

The vocabulary projection is the most expensive single layer of a small LM (49k x 576 for
SmolLM2). Prompt tokens carry no loss, so the projection runs only on the hidden states of the
positions that predict a trained token: ``head(body(...).last_hidden_state)``. Many models do
more between the body and the logits (Granite divides by ``logits_scaling``, FalconH1 multiplies
by ``lm_head_multiplier``, Gemma soft-caps, Cohere scales), so that shortcut is used only once it
has been proven equal to the model's own logits, on the first batch each model sees; otherwise
the loss takes the model's full forward.

A packed batch (``--packing``, solo_cli/data/packing.py) carries ``position_ids`` that restart at
each example and no ``attention_mask``; transformers then keeps the examples apart. That a model
does is proven once per model (:func:`prove_packing`), and a model that does not is refused.
"""

from __future__ import annotations

import contextlib
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError, param

# model -> (body, head) when proven equal to the model's logits, None when not
_VERIFIED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# model -> whether packed rows give each example the logits it has alone
_PACKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the model is called with: ``input_ids`` and the packed rows' ``position_ids``, or the padding's ``attention_mask``."""
    if "position_ids" in batch:  # packed: no mask, so transformers builds the per-example one from the positions
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def _first_row(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v[:1] for k, v in model_inputs(batch).items()}


def _candidate(model: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """``(body, head)`` if the model has the usual shape: a base model and a linear output embedding."""
    body = getattr(model, "base_model", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if body is None or body is model or not isinstance(head, nn.Linear):
        return None
    return body, head


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """``model`` in eval mode (dropout off, so no RNG is consumed) inside the block, its mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@torch.no_grad()
def _proves_equal(model: nn.Module, body: nn.Module, head: nn.Module, batch: dict[str, torch.Tensor]) -> bool:
    """Compare the shortcut with the full forward on one row, dropout off (so no RNG is consumed)."""
    with eval_mode(model):
        row = _first_row(batch)
        full = model(**row, use_cache=False).logits.float()
        fast = head(body(**row, use_cache=False).last_hidden_state).float()
    scale = float(full.abs().max().clamp_min(1.0))
    return full.shape == fast.shape and bool(torch.allclose(fast, full, rtol=1e-3, atol=1e-3 * scale))


def fast_path(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[nn.Module, nn.Module] | None:
    """The proven ``(body, head)`` shortcut of ``model``, or None; checked once per model object."""
    if model not in _VERIFIED:
        candidate = _candidate(model)
        _VERIFIED[model] = candidate if candidate and _proves_equal(model, *candidate, batch) else None
    return _VERIFIED[model]


def packs_flat(model: nn.Module) -> bool:
    """Whether packed rows go to ``model`` as one flattened row: flash-attention's varlen path reads the
    examples' boundaries from ``position_ids`` only when the batch is a single row."""
    config = getattr(model, "config", None)
    return "flash" in str(getattr(config, "_attn_implementation", "") or "")


def prove_packing(model: nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """Refuse ``--packing`` unless ``model`` gives the examples of a packed row the logits each has alone.

    ``batch`` is a packed batch (:func:`solo_cli.data.packing.collate_packed`) whose first row holds
    at least two examples. Proven once per model object, in float32 where the weights are, dropout off.
    Some models ignore packed ``position_ids`` (OPT derives its positions from the attention mask),
    so their examples would attend to each other; they are refused before the first step.
    """
    if model not in _PACKS:
        if int((batch["position_ids"][0] == 0).sum()) < 2:
            raise ValueError("prove_packing needs a first row of two examples or more")
        _PACKS[model] = _packed_equals_alone(model, batch)
    if not _PACKS[model]:
        config = getattr(model, "config", None)
        name, attention = getattr(config, "model_type", type(model).__name__), getattr(config, "_attn_implementation", None)
        kind = f"{name} ({attention} attention)"
        raise UsageError(
            f"{param('packing')}: {kind} does not keep packed examples apart (their logits change when they share a "
            "row), so packing would train on text across examples; train without it"
        )


@torch.no_grad()
def _packed_equals_alone(model: nn.Module, batch: dict[str, torch.Tensor]) -> bool:
    """Whether the first row's packed logits equal, example by example, those of each example alone (first 3 examples)."""
    ids, positions = batch["input_ids"][0], batch["position_ids"][0]
    starts = [int(s) for s in (positions == 0).nonzero().squeeze(1)][:4] + [len(ids)]
    end = starts[min(3, len(starts) - 1)]
    with eval_mode(model), torch.autocast(ids.device.type, enabled=False):
        packed = model(input_ids=ids[None, :end], position_ids=positions[None, :end], use_cache=False).logits[0]
        alone = [model(input_ids=ids[None, a:b], use_cache=False).logits[0] for a, b in zip(starts, starts[1:]) if b <= end]
    alone = torch.cat(alone).float()
    exact = next(model.parameters()).dtype == torch.float32
    scale = float(alone.abs().max().clamp_min(1.0)) * (1e-3 if exact else 3e-2)
    return packed.shape == alone.shape and bool(torch.allclose(packed.float(), alone, rtol=1e-3, atol=scale))


def causal_lm_loss(model: nn.Module, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """Mean next-token cross-entropy over the trained tokens of ``batch``; returns (loss, tokens).

    ``batch["loss_positions"]`` (from collate, computed on the CPU) says which flattened positions
    predict a trained token, so the loss reads nothing back from the device; without it they are
    found from the labels (a device read on a GPU). A packed batch (with ``position_ids``) is
    scored the same way: its rows' labels already leave out each example's first token.
    """
    logits, wanted, positions = scored_logits(model, batch)
    count = positions.numel()
    loss = F.cross_entropy(logits.float(), wanted, label_smoothing=label_smoothing, reduction="sum")
    return loss / max(1, count), count


def scored_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(logits, targets, positions)`` of the positions of ``batch`` that predict a trained token, the vocabulary
    projection run on those alone where that is proven exact (:func:`fast_path`); what every loss is taken over.

    ``positions`` are flat indices ``row * (width - 1) + t`` (see :func:`solo_cli.data.row_encoding.collate`).
    """
    targets = batch["labels"][:, 1:]
    positions = batch.get("loss_positions")
    if positions is None:
        positions = (targets != -100).reshape(-1).nonzero().squeeze(1)
    fast = fast_path(model, batch)
    if fast is not None:
        body, head = fast
        hidden = body(**model_inputs(batch), use_cache=False).last_hidden_state
        logits = head(_pick(hidden[:, :-1], positions))
    else:
        logits = model(**model_inputs(batch), use_cache=False).logits
        logits = _pick(logits[:, :-1], positions)
    return logits, targets.reshape(-1).index_select(0, positions), positions


def _pick(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rows ``positions`` of ``values`` (batch x time x features) flattened over batch and time."""
    return values.reshape(-1, values.shape[-1]).index_select(0, positions)


@torch.no_grad()
def evaluate_loss(model, examples, batch_size: int, pad_id: int, device, reduce=None) -> float:
    """Token-weighted mean loss over ``examples`` (dropout off).

    ``reduce`` sums ``[total, count]`` over processes when the examples are shared out (training
    passes its distributed context's sum; each process then scores its own share of ``examples``).
    """
    from ..data.row_encoding import collate

    total, count = 0.0, 0
    with eval_mode(model):
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[start : start + batch_size], pad_id).items()}
            loss, n = causal_lm_loss(model, batch)
            total += float(loss) * n
            count += n
    if reduce is not None:
        total, count = reduce([total, count])
    return total / max(1, count)
