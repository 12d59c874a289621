"""Choosing each row's next token: greedy (temperature 0), or sampled with the row's own generator.

Every sampled row draws from its own ``torch.Generator`` seeded by its request, so a seeded request
gives the same tokens whatever else shares its batch.
"""

from __future__ import annotations

import torch


def next_tokens(logits: torch.Tensor, jobs: list) -> list[int]:
    """The next token of every row of ``logits`` (rows x vocabulary, float32), one job per row."""
    chosen = logits.argmax(dim=-1).tolist()
    for b, job in enumerate(jobs):
        if job.temperature > 0:
            chosen[b] = sample(logits[b], job.temperature, job.top_p, job.generator)
    return chosen


def sample(logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator) -> int:
    """One token from ``softmax(logits / temperature)``, restricted to the top-``top_p`` probability mass."""
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # keep the likeliest tokens until their mass reaches top_p (the first one always)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        pick = torch.multinomial(sorted_probs, 1, generator=generator)
        return int(order[pick])
    return int(torch.multinomial(probs, 1, generator=generator))


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator
