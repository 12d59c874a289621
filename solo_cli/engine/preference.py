"""Preference losses over a batch of pairs: each reply's log-probability, and DPO, ORPO and SimPO as TRL has them.

A batch of pairs (:func:`solo_cli.data.pairs.collate_pairs`) holds ``2P`` rows: the chosen replies,
then the rejected ones, each scored on its own tokens only (its labels). One forward over the
whole batch gives every reply's summed log-probability (TRL's concatenated forward); the vocabulary
projection runs only on the scored positions, as for the next-token loss (:mod:`.loss`).

The losses, per pair, as TRL computes them (``trl.DPOTrainer``'s ``sigmoid`` loss;
``trl.experimental.orpo``; ``trl.experimental.cpo`` with ``loss_type="simpo"``, ``cpo_alpha=0``):

- ``dpo``: ``-log sigmoid(beta * ((c - c_ref) - (r - r_ref)))`` on summed log-probs ``c``, ``r``;
  rewards ``beta * (c - c_ref)`` and ``beta * (r - r_ref)``. When the policy is the reference the
  loss is ``ln 2``.
- ``orpo``: ``-c_avg - beta * log sigmoid(log odds(c_avg) - log odds(r_avg))`` on length-averaged
  log-probs (the odds ratio of the paper, its ``lambda`` being ``beta``); rewards ``beta * c_avg``.
  The NLL term is the chosen reply's mean token loss, per pair as the paper writes it (TRL takes it
  over the prompt too, and over the batch's tokens), so that any split of a batch gives one gradient.
- ``simpo``: ``-log sigmoid(beta * (c_avg - r_avg) - gamma)``; rewards ``beta * c_avg``.

``logps/*`` are the log-probabilities the loss uses: summed for DPO, averaged over the reply's
tokens for ORPO and SimPO (as TRL logs them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .loss import scored_logits

# The metrics every preference loss reports, TRL's names; sums over pairs in this order (means once divided).
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")
_LN2 = math.log(2.0)


def reply_logps(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log-probabilities, token counts)`` of every row of ``batch``: the sums over its scored tokens, in float32."""
    logits, wanted, positions = scored_logits(model, batch)
    token_logps = -F.cross_entropy(logits.float(), wanted, reduction="none")
    width = batch["labels"].shape[1] - 1
    rows = torch.div(positions, width, rounding_mode="floor")  # flat positions are row * (width - 1) + t
    sums = token_logps.new_zeros(batch["labels"].shape[0]).index_add(0, rows, token_logps)
    return sums, (batch["labels"][:, 1:] != -100).sum(1)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, stable on both sides of ``-ln 2`` (as TRL's ORPO computes it)."""
    return torch.where(x < -_LN2, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def pair_losses(
    objective: str, beta: float, logps: torch.Tensor, counts: torch.Tensor, reference=None, gamma: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair losses and the sums over pairs of :data:`METRICS` (detached) of one batch.

    ``logps``/``counts``: :func:`reply_logps` of a batch of ``P`` pairs (chosen rows first);
    ``reference``: ``P x 2`` reference log-probabilities (chosen, rejected), for ``dpo``.
    """
    chosen, rejected = logps.chunk(2)
    if objective == "dpo":
        if reference is None:
            raise ValueError("dpo needs the reference log-probabilities of every pair")
        reward_c, reward_r = beta * (chosen - reference[:, 0]), beta * (rejected - reference[:, 1])
        losses = -F.logsigmoid(reward_c - reward_r)
        shown_c, shown_r = chosen, rejected
    else:
        count_c, count_r = counts.float().clamp_min(1).chunk(2)
        avg_c, avg_r = chosen / count_c, rejected / count_r
        reward_c, reward_r = beta * avg_c, beta * avg_r
        if objective == "orpo":
            # a reply certain to the last bit (average log-prob 0) has infinite odds: kept just below it
            odds_c, odds_r = avg_c.clamp_max(-1e-6), avg_r.clamp_max(-1e-6)
            log_odds = (odds_c - odds_r) - (_log1mexp(odds_c) - _log1mexp(odds_r))
            losses = -avg_c - beta * F.logsigmoid(log_odds)
        elif objective == "simpo":
            losses = -F.logsigmoid(reward_c - reward_r - gamma)
        else:
            raise ValueError(f"no preference loss {objective!r}")
        shown_c, shown_r = avg_c, avg_r
    reward_c, reward_r = reward_c.detach(), reward_r.detach()
    sums = torch.stack(
        [
            reward_c.sum(),
            reward_r.sum(),
            (reward_c > reward_r).float().sum(),
            (reward_c - reward_r).sum(),
            shown_c.detach().sum(),
            shown_r.detach().sum(),
        ]
    )
    return losses, sums
