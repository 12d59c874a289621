"""The optimizer and its learning-rate schedule: AdamW over the adapter's A and B."""

from __future__ import annotations

import torch
from transformers import get_scheduler

from ..engine.adapter import SoloAdapter
from .config import TrainConfig


def make_optimizer(adapter: SoloAdapter, cfg: TrainConfig, steps: int):
    """AdamW over the adapter's parameters, with ``cfg``'s schedule over ``steps`` optimizer steps.

    Returns ``(optimizer, scheduler)``. The scheduler's lr_lambdas are closures built here, so a
    checkpoint stores only its counters and a resumed run rebuilds them by calling this again.
    """
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    name = "constant_with_warmup" if cfg.schedule == "constant" else cfg.schedule
    scheduler = get_scheduler(name, optimizer, num_warmup_steps=cfg.warmup, num_training_steps=steps)
    return optimizer, scheduler
