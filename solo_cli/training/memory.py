"""Memory while training: trading compute for it (activation checkpointing), and running out of it."""

from __future__ import annotations

import contextlib

import torch

from ..errors import RuntimeFailure, param


def set_checkpointing(model, enabled: bool) -> None:
    """Turn activation checkpointing on or off, non-reentrant so the adapter's hooks recompute exactly."""
    if enabled:
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
        disable()


@contextlib.contextmanager
def activation_checkpointing(model, enabled: bool):
    """Activation checkpointing on ``model`` for the ``with`` block when ``enabled``; off again after it."""
    if not enabled:
        yield
        return
    set_checkpointing(model, True)
    try:
        yield
    finally:
        set_checkpointing(model, False)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator running out: CUDA's OutOfMemoryError, or the CPU's or MPS's message."""
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate memory" in text


def out_of_memory(step: int) -> RuntimeFailure:
    """The error for running out of memory at optimizer step ``step``, with the flags that use less."""
    return RuntimeFailure(
        f"ran out of memory at step {step}; lower {param('batch_size')} (and raise {param('grad_accum')} to keep "
        f"the effective batch), lower {param('max_seq_length')}, or add {param('grad_checkpoint')}"
    )
