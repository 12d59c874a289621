"""solo_cli.engine.mixed: every row of a forward runs its own adapter, exactly as that adapter alone would.

(Engine tests kept beside the server that is their only user.)
"""

from __future__ import annotations

import pytest
import torch
from live_server import ADAPTERS
from support import inputs, make_adapter, perturb
from tiny import make_model

from solo_cli.engine.adapter import attach
from solo_cli.engine.mixed import MixedAdapters


def _adapters(model):
    return {name: perturb(make_adapter(model, **spec), scale=0.5) for name, spec in ADAPTERS.items()}


def _alone(model, adapter, ids):
    handle = attach(model, adapter)
    try:
        return model(ids).logits
    finally:
        handle.detach()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_each_row_of_a_mixed_batch_is_its_adapter_alone_and_base_rows_are_the_base_exactly(dtype):
    model = make_model("llama").to(dtype)
    adapters = _adapters(model)
    ids = inputs(batch=5, length=6)
    base = model(ids).logits
    alone = {name: _alone(model, adapter, ids) for name, adapter in adapters.items()}
    mixed = MixedAdapters(model)
    slots = {name: mixed.add(adapter) for name, adapter in adapters.items()}
    rows = ["a1", "a2", None, "a3", "a1"]  # None: the bare base
    mixed.use([slots[r] if r else 0 for r in rows], [1.0] * 5)
    out = model(ids).logits
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}
    for b, name in enumerate(rows):
        if name is None:
            assert torch.equal(out[b], base[b])
        else:
            torch.testing.assert_close(out[b], alone[name][b], **tolerance)
    mixed.use([slots["a2"]] * 5, [0.0, 1.0, 0.0, 1.0, 0.0])  # scale 0: the base, bit for bit
    out = model(ids).logits
    for b in (0, 2, 4):
        assert torch.equal(out[b], base[b])
    mixed.close()
    assert torch.equal(model(ids).logits, base)


@torch.no_grad()
def test_a_scale_multiplies_every_connection_of_the_rows_adapter():
    model = make_model("llama")
    adapter = _adapters(model)["a2"]
    ids = inputs(batch=2, length=5)
    mixed = MixedAdapters(model)
    slot = mixed.add(adapter)
    mixed.use([slot, slot], [0.25, 2.0])
    out = model(ids).logits
    mixed.close()  # the references below attach the adapter alone
    for b, scale in enumerate((0.25, 2.0)):
        scaled = perturb(make_adapter(model, **ADAPTERS["a2"]), scale=0.5)
        scaled.load_state_dict(adapter.state_dict())
        for conn in scaled.connections.values():
            conn.B.mul_(scale)
        torch.testing.assert_close(out[b], _alone(model, scaled, ids)[b], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_slots_are_reused_and_a_removed_adapters_rows_run_as_the_base():
    model = make_model("llama")
    adapters = _adapters(model)
    ids = inputs(batch=1, length=4)
    base = model(ids).logits
    alone = {name: _alone(model, adapter, ids) for name, adapter in adapters.items()}
    mixed = MixedAdapters(model)
    first, second = mixed.add(adapters["a1"]), mixed.add(adapters["a3"])
    mixed.remove(first)
    mixed.use([first], [1.0])
    assert torch.equal(model(ids).logits, base)
    assert mixed.add(adapters["a2"]) == first and mixed.slots == 3
    mixed.use([first], [1.0])
    torch.testing.assert_close(model(ids).logits, alone["a2"], atol=1e-5, rtol=1e-5)
    mixed.use([second], [1.0])
    torch.testing.assert_close(model(ids).logits, alone["a3"], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        mixed.remove(0)
