"""What a training step minimises: the part of a run that turns a batch into a loss and its metrics.

The trainer, its sampler, checkpoints and resume are the same for every objective; an objective says
how much each item weighs in a step's mean (``weight``), how many tokens a forward over it reads
(``tokens``), how items become one batch (``collate``) and what a batch's loss is (``loss``).

- ``sft``: the next-token loss over the trained tokens (:func:`solo_cli.engine.loss.causal_lm_loss`),
  each token weighing one.
- ``dpo``, ``orpo``, ``simpo``: a preference loss per pair (:mod:`solo_cli.engine.preference`), each
  pair weighing one, with TRL's metrics (``rewards/*``, ``logps/*``) summed over the step's pairs
  and reported beside the loss. DPO's reference log-probabilities ride in the batch
  (:mod:`solo_cli.training.reference` computes them once, before the first step).
"""

from __future__ import annotations

import torch

from ..data.pairs import PairExample, collate_pairs
from ..data.row_encoding import Example, collate, loss_tokens
from ..engine.loss import causal_lm_loss, eval_mode, evaluate_loss
from ..engine.preference import METRICS, pair_losses, reply_logps
from .config import TrainConfig
from .sharded_validation import even_batches, sharded_valid_loss


class Objective:
    """``--objective sft``: the next-token loss, weighted by trained tokens."""

    name = "sft"
    pairs = False
    metric_names: tuple[str, ...] = ()
    needs_reference = False

    def weight(self, item: Example) -> int:
        """What ``item`` counts in the step's mean: its trained tokens."""
        return loss_tokens(item.labels)

    def tokens(self, item: Example) -> int:
        return len(item.input_ids)

    def collate(self, items, pad_id: int) -> dict[str, torch.Tensor]:
        return collate(items, pad_id)

    def loss(self, model, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0):
        """``(mean loss over the batch's trained tokens, trained tokens)``."""
        return causal_lm_loss(model, batch, label_smoothing)

    def metrics(self, sums: list[float], total: float) -> dict[str, float]:
        return {}

    def validate(self, on_model, examples, batch_size: int, pad_id: int, device, ctx, autocast=None, sharded=False):
        """``{"loss": the token-weighted mean validation loss over examples}``, shared out over the processes: under
        FSDP (``sharded``) each runs as many forwards as the others (:func:`sharded_valid_loss`), else each scores
        every N-th example and the sums are reduced; the number one process computes."""
        if sharded:
            return {"loss": sharded_valid_loss(on_model, examples, batch_size, pad_id, device, ctx)}
        mine = examples[ctx.rank :: ctx.world_size]
        return {"loss": on_model(evaluate_loss, mine, batch_size, pad_id, device, lambda v: ctx.sum(v, device))}


class PreferenceObjective(Objective):
    """``--objective dpo|orpo|simpo``: a loss per preference pair; each pair weighs one in the step's mean."""

    pairs = True
    metric_names = METRICS

    def __init__(self, name: str, beta: float, gamma: float = 0.0) -> None:
        self.name, self.beta, self.gamma = name, beta, gamma
        self.needs_reference = name == "dpo"

    def weight(self, item: PairExample) -> int:
        return 1

    def tokens(self, item: PairExample) -> int:
        return item.tokens

    def collate(self, items, pad_id: int) -> dict[str, torch.Tensor]:
        return collate_pairs(items, pad_id)

    def loss(self, model, batch: dict[str, torch.Tensor], label_smoothing: float = 0.0):
        """``(mean loss over the batch's pairs, pairs, sums of the metrics over them)``; ``label_smoothing`` is
        refused for preference objectives by the config, and ignored here."""
        logps, counts = reply_logps(model, batch)
        losses, sums = pair_losses(self.name, self.beta, logps, counts, batch.get("reference_logps"), self.gamma)
        return losses.mean(), losses.numel(), sums

    def metrics(self, sums: list[float], total: float) -> dict[str, float]:
        """The step's (or a validation's) metrics: ``sums`` over ``total`` pairs as means."""
        return {name: value / max(1.0, total) + 0.0 for name, value in zip(METRICS, sums)}  # + 0.0: never -0.0

    @torch.no_grad()
    def validate(self, on_model, pairs, batch_size: int, pad_id: int, device, ctx, autocast=None, sharded=False):
        """The mean loss and metrics over validation ``pairs``, shared out over the processes, each running as many
        forwards as the others (a process with no pairs left runs a stand-in, counted 0: FSDP needs it)."""
        sums = torch.zeros(1 + len(METRICS), dtype=torch.float64)
        count = 0
        for share in even_batches(pairs, batch_size, ctx):
            batch = {k: v.to(device) for k, v in self.collate(share or pairs[:1], pad_id).items()}
            with autocast or _no_autocast(device):
                loss, n, metric_sums = on_model(_eval_mode(self.loss), batch)
            if share:
                sums += torch.cat([(loss.detach() * n).reshape(1), metric_sums]).double().cpu()
                count += n
        totals = ctx.sum([*sums.tolist(), float(count)], device)
        values = self.metrics(totals[1:-1], totals[-1])
        return {"loss": totals[0] / max(1.0, totals[-1])} | values


def _no_autocast(device):
    return torch.autocast(torch.device(device).type, enabled=False)


def _eval_mode(fn):
    """``fn(model, *args)`` with the model in eval mode (dropout off), its mode restored after."""

    def run(model, *args):
        with eval_mode(model):
            return fn(model, *args)

    return run


def objective_of(cfg: TrainConfig) -> Objective:
    """The objective ``cfg`` trains (``--objective``, with ``--beta`` and ``--simpo-gamma`` resolved)."""
    if cfg.objective == "sft":
        return Objective()
    return PreferenceObjective(cfg.objective, cfg.resolved_beta(), cfg.resolved_gamma() or 0.0)


def objective_summary(cfg: TrainConfig) -> dict:
    """What the adapter file's training summary (and so the model card) says of the objective: its name, its
    resolved ``beta`` (and SimPO's ``gamma``) and the adapter the run started from."""
    values = {"objective": cfg.objective, "beta": cfg.resolved_beta(), "simpo_gamma": cfg.resolved_gamma()}
    values["init_adapter"] = str(cfg.init_adapter) if cfg.init_adapter else None
    return {key: value for key, value in values.items() if value is not None}
