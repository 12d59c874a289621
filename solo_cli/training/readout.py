"""What one optimizer step reports, read from the device in one transfer.

Every ``float(t)``, ``bool(t)``, ``int(t)`` or ``t.item()`` of a device tensor makes the host
wait for the device to finish all the work queued so far; on a GPU a small model's step is
short enough that a handful of such waits leave the device idle most of the step. So the loss,
the parameters' finiteness, the gates and (under torchrun) the stop request are gathered into
one tensor, reduced over processes on the device, and copied to the host once, after the
optimizer step. Token counts need no transfer at all: they are counted from the examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from ..engine.adapter import SoloAdapter
from .distributed import DistContext


@dataclass
class StepReadout:
    """The host's copy of a step's numbers."""

    loss_sum: float  # token-weighted loss summed over every process (NaN or inf if any micro-batch's was)
    broken: str | None  # the first adapter parameter of this process holding NaN or inf
    broken_anywhere: bool  # a parameter holds NaN or inf on some process
    gate: float  # the mean gate t over the connections
    stop: bool  # some process was asked to stop (only gathered under torchrun)
    metric_sums: list[float] = field(default_factory=list)  # the objective's metrics summed over every process


def read_step(
    adapter: SoloAdapter, loss_sum: torch.Tensor, ctx: DistContext, stop_requested: bool, metric_sums: torch.Tensor | None = None
) -> StepReadout:
    """Gather the step's device scalars, reduce over processes, and copy them to the host once.

    ``metric_sums`` (an objective's metrics summed over this process's items) are summed over the processes too.
    """
    device = loss_sum.device
    params = list(adapter.named_parameters())
    finite = torch.stack([torch.isfinite(p).all() for _, p in params]).float() if params else loss_sum.new_ones(0)
    gates = [conn.gate for conn in adapter.connections.values() if conn.gate is not None]
    fixed = len(adapter.connections) - len(gates)  # zero-init connections: t is 1
    # summed over processes: [loss sum, parameters broken here, stop requested here, the objective's metric sums...]
    extra = metric_sums.float().reshape(-1) if metric_sums is not None else loss_sum.new_zeros(0)
    own = [loss_sum.float(), (finite.numel() - finite.sum()).float(), torch.full((), float(stop_requested), device=device)]
    shared = torch.cat([torch.stack(own), extra])
    if ctx.enabled:
        dist.all_reduce(shared, op=dist.ReduceOp.SUM)  # on the device: no host wait
    local = torch.cat([finite, torch.stack([g.detach().float() for g in gates]) if gates else finite.new_zeros(0)])
    values = torch.cat([shared, local.to(device)]).tolist()  # the step's one transfer
    loss, bad, stop = values[:3]
    sums, values = values[3 : 3 + extra.numel()], values[3 + extra.numel() :]
    flags, gate_values = values[: len(params)], values[len(params) :]
    broken = next((name for (name, _), ok in zip(params, flags) if not ok), None)
    count = len(adapter.connections)
    return StepReadout(loss, broken, bad > 0, (sum(gate_values) + fixed) / max(1, count), stop > 0, sums)
