"""The optimizer and its learning-rate schedule: AdamW over the adapter's A and B."""

from __future__ import annotations

import torch
from transformers import get_scheduler

from ..engine.adapter import SoloAdapter
from .config import TrainConfig


def param_groups(adapter: SoloAdapter, cfg: TrainConfig) -> list[dict]:
    """AdamW's parameter groups: one at ``cfg.lr``, or with ``--lr-b-ratio`` other than 1 two, every
    connection's B at ``lr x ratio`` after the rest (A) at ``lr``, as LoRA+ (Hayou et al. 2024) trains LoRA's B.

    One group when the ratio is 1, so checkpoints of runs made before the option resume unchanged.
    """
    params = list(adapter.named_parameters())
    if cfg.lr_b_ratio == 1.0:
        return [{"params": [p for _, p in params], "lr": cfg.lr}]
    b = [p for name, p in params if name.rsplit(".", 1)[-1] == "B"]
    rest = [p for name, p in params if name.rsplit(".", 1)[-1] != "B"]
    return [{"params": rest, "lr": cfg.lr}, {"params": b, "lr": cfg.lr * cfg.lr_b_ratio}]


def make_optimizer(adapter: SoloAdapter, cfg: TrainConfig, steps: int):
    """AdamW over the adapter's parameters (:func:`param_groups`), with ``cfg``'s schedule over ``steps`` optimizer steps.

    Returns ``(optimizer, scheduler)``. The scheduler's lr_lambdas are closures built here, so a
    checkpoint stores only its counters and a resumed run rebuilds them by calling this again. The
    schedule scales every group's own peak lr, so B stays at ``ratio`` x A's lr throughout.
    """
    optimizer = torch.optim.AdamW(param_groups(adapter, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    name = "constant_with_warmup" if cfg.schedule == "constant" else cfg.schedule
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup, num_training_steps=steps)
    return optimizer, scheduler
