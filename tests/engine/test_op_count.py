"""How many operations one training step of the default adapter dispatches (a count, not a time).

On a GPU every dispatched operation is a kernel launch, and a small model's step is bound by
launches, so a connection that grows by an operation shows here before it shows in a benchmark.
To update a pinned number after a change that is meant to move it: run the test, read the count
in the failure message, check with ``python bench/ops.py`` that the built-in model moves the same
way, and write the new number here with the reason in the commit.
"""

from __future__ import annotations

import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from solo_cli import AdapterConfig, SoloAdapter, attach, fingerprint
from solo_cli.engine.loss import causal_lm_loss
from solo_cli.engine.modeling_solo import SoloConnection
from solo_cli.engine.topology import parse_connections
from solo_cli.training.config import TrainConfig
from tests.tiny import make_model

VIEWS = {"view", "_unsafe_view", "t", "transpose", "expand", "slice", "select", "unsqueeze", "squeeze", "permute"}
VIEWS |= {"alias", "as_strided", "detach", "reshape", "split", "unbind", "_reshape_alias", "lift_fresh"}
VIEWS |= {"empty", "empty_like", "empty_strided"}

# Operations one forward and backward adds per connection (the default: rms source norm, schedule gate
# set by training, a source that itself needs a gradient), beyond the first connection: 13.5 with
# torch 2.13; 33.6 before the connection's hand-written backward. A tiny LoRA r=4 layer costs 19.7.
PER_CONNECTION = 13.5
# The whole step of a 12-block tiny Llama with the default plan (11 connections), bf16 autocast: 1,465
# with torch 2.13 and transformers 5.25 (most of it the base's own, which other versions may move a little).
STEP_AT_MOST = 1490


class Count(TorchDispatchMode):
    """Counts the operations dispatched inside it, views and allocations left out (as bench/ops.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ not in VIEWS:
            self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def _step_ops(spec: str) -> collections.Counter:
    defaults = TrainConfig()
    model = make_model("llama", layers=12)
    fp = fingerprint(model)
    torch.manual_seed(0)
    plan = parse_connections(spec, fp.num_blocks)
    adapter = SoloAdapter(AdapterConfig(plan, defaults.rank, defaults.gate, 10, fp.hidden_size, source_norm=defaults.source_norm))
    attach(model, adapter)
    adapter.set_homotopy_step(4)  # mid-ramp: the gate is neither 0 nor 1
    ids = torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    model.train()

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = causal_lm_loss(model, batch)
        loss.backward()
        adapter.zero_grad(set_to_none=True)

    step()  # warm-up: the loss proves its shortcut once per model
    with Count() as counter:
        step()
    return counter.ops


def test_the_default_step_dispatches_a_pinned_number_of_operations():
    assert TrainConfig().connections == "chain"  # on 12 blocks: chain:2, 11 connections, the first from the embedding
    full, single = _step_ops("chain"), _step_ops("-1->1")  # same lowest destination: same blocks differentiated
    per_connection = (sum(full.values()) - sum(single.values())) / 10
    assert per_connection <= PER_CONNECTION, f"{per_connection} operations per connection (pinned {PER_CONNECTION})"
    assert sum(full.values()) <= STEP_AT_MOST, f"{sum(full.values())} operations per step (pinned {STEP_AT_MOST}): {full}"
    assert "_local_scalar_dense" not in full - single  # no connection reads a value back to the host


def _connection_ops(conn: SoloConnection) -> collections.Counter:
    x = torch.randn(2, 5, 8, requires_grad=True)
    base = torch.randn(2, 5, 8)
    with Count() as counter, torch.autocast("cpu", dtype=torch.bfloat16):
        out = conn(x, base)
    with Count() as backward:
        out.backward(torch.ones_like(out))
    conn.zero_grad(set_to_none=True)
    return counter.ops + backward.ops


def test_a_connection_under_autocast_casts_nothing_and_a_set_gate_costs_no_operation():
    conn = SoloConnection(8, 3, "schedule", "rms")
    conn.set_gate(0.5)
    _connection_ops(conn)  # warm-up: the norm's constant d * eps is made once per device
    folded = _connection_ops(conn)
    assert "_to_copy" not in folded  # float32 in and out: no dtype round trip, autocast or not
    conn.gate.fill_(0.5)  # changed behind set_gate's back: the tensor is read again, correctly
    assert sum(_connection_ops(conn).values()) == sum(folded.values()) + 1  # the gate's multiply
