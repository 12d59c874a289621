"""The adapter's contracts: exact zero start, exact caching, gradients only where they belong."""

import inspect

import pytest
import torch
from support import PLAN, inputs, make_adapter, perturb
from tiny import ARCHS, make_model
from torch import nn
from torch.testing import assert_close

from solo_cli import attach
from solo_cli.engine.adapter import GATE_MODES, SOURCE_NORMS
from solo_cli.engine.blocks import find_blocks
from solo_cli.engine.loss import causal_lm_loss
from solo_cli.training.memory import set_checkpointing


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("gate", GATE_MODES)
@pytest.mark.parametrize("source_norm", SOURCE_NORMS)
def test_fresh_adapter_gives_exactly_the_base_logits(arch, gate, source_norm):
    model = make_model(arch)
    ids = inputs()
    base = model(ids).logits
    handle = attach(model, make_adapter(model, gate, source_norm=source_norm))
    assert torch.equal(model(ids).logits, base)
    handle.detach()


@pytest.mark.parametrize("arch", ARCHS)
def test_fresh_adapter_is_exact_with_kv_cache(arch):
    model = make_model(arch)
    ids = inputs(batch=1, length=6)
    base = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=2)
    attach(model, make_adapter(model, "learned"))
    adapted = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=2)
    assert torch.equal(adapted, base)


@pytest.mark.parametrize("arch", ARCHS)
def test_trained_adapter_changes_logits_and_detach_restores(arch):
    model = make_model(arch)
    ids = inputs()
    base = model(ids).logits
    handle = attach(model, perturb(make_adapter(model)))
    assert not torch.allclose(model(ids).logits, base)
    handle.enabled = False
    assert torch.equal(model(ids).logits, base)
    handle.enabled = True
    handle.detach()
    assert torch.equal(model(ids).logits, base)


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_generation_equals_uncached(arch):
    model = make_model(arch)
    attach(model, perturb(make_adapter(model)))
    ids = inputs(batch=1, length=5)
    cached = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True, pad_token_id=2)
    uncached = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False, pad_token_id=2)
    assert torch.equal(cached, uncached)
    # and step by step: logits of the last position with a cache equal a full forward
    out = model(ids, use_cache=True)
    nxt = out.logits[:, -1:].argmax(-1)
    # transformers renamed past_key_values to cache in 5.2x; pass it by whichever name this one takes
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    step = model(nxt, **{name: out.past_key_values}, use_cache=True).logits[:, -1]
    full = model(torch.cat([ids, nxt], 1), use_cache=False).logits[:, -1]
    assert_close(step, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source_norm", SOURCE_NORMS)
def test_connection_adds_low_rank_map_of_source(arch, source_norm):
    """h_j <- block_j(h_{j-1}) + t B A n(h_i), checked against hidden states captured by hand."""
    model = make_model(arch)
    _, blocks = find_blocks(model)
    ids = inputs()

    def capture():
        seen = {}
        hooks = [blocks[k].register_forward_hook(lambda m, a, o, k=k: seen.__setitem__(k, _hidden(o))) for k in (0, 2)]
        model(ids)
        for h in hooks:
            h.remove()
        return seen

    plain = capture()
    adapter = perturb(make_adapter(model, plan=[(0, 2)], source_norm=source_norm))
    attach(model, adapter)
    adapted = capture()  # hooks registered after the adapter's see its output
    conn = adapter.connections["0_2"]
    assert torch.equal(adapted[0], plain[0])
    source = plain[0]
    if source_norm == "rms":  # each position divided by its root mean square
        source = source / source.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    assert_close(adapted[2], plain[2] + 0.7 * (source @ conn.A.t() @ conn.B.t()), rtol=1e-5, atol=1e-6)


def test_gradients_reach_only_adapter_tensors():
    model = make_model("llama")
    adapter = make_adapter(model, "learned")
    attach(model, adapter)
    model.train()
    ids = inputs()
    loss, _ = causal_lm_loss(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    loss.backward()
    assert all(p.grad is None for p in model.parameters())
    # t = 0: only the gates get a gradient on the first step; A and B get exactly zero
    for conn in adapter.connections.values():
        assert conn.gate.grad is not None and conn.gate.grad.abs() > 0
        assert torch.count_nonzero(conn.A.grad) == 0
    perturb(adapter)
    adapter.zero_grad()
    loss, _ = causal_lm_loss(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())


def test_no_backward_below_the_lowest_destination():
    """Blocks below the lowest destination get inputs that do not require grad: autograd skips them."""
    model = make_model("llama", layers=6)
    attach(model, perturb(make_adapter(model, plan=[(0, 4), (1, 5)])))
    _, blocks = find_blocks(model)
    needs_grad = {}
    for k, block in enumerate(blocks):
        block.register_forward_hook(lambda m, a, o, k=k: needs_grad.__setitem__(k, o.requires_grad))
    model.train()
    ids = inputs()
    model(ids)
    assert [needs_grad[k] for k in range(6)] == [False, False, False, False, True, True]


@pytest.mark.parametrize("gate", GATE_MODES)
def test_bfloat16_zero_start_and_training_step(gate):
    model = make_model("llama").to(torch.bfloat16)
    ids = inputs()
    base = model(ids).logits
    adapter = make_adapter(model, gate)
    attach(model, adapter)
    assert torch.equal(model(ids).logits, base)
    assert adapter.connections["emb_2"].A.dtype == torch.float32  # master weights stay fp32
    perturb(adapter)
    loss, _ = causal_lm_loss(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids})
    loss.backward()
    assert torch.isfinite(loss) and adapter.connections["emb_2"].A.grad.dtype == torch.float32


def test_gradient_checkpointing_gives_the_same_gradients():
    ids = inputs()
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    grads = []
    for checkpointing in (False, True):
        model = make_model("llama")
        adapter = perturb(make_adapter(model, plan=[(0, 2), (2, 3)]))
        attach(model, adapter)
        if checkpointing:
            set_checkpointing(model, True)
        model.train()
        loss, _ = causal_lm_loss(model, batch)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in adapter.named_parameters()})
    for name in grads[0]:
        assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7)


def test_schedule_gate_ramps_from_zero_to_one():
    """Fresh, t is exactly 0 (the base model); optimizer step s trains at t = (s + 1) / H, so the first update moves A and B."""
    model = make_model("llama")
    adapter = make_adapter(model, "schedule")
    assert adapter.connections["0_3"].gate_value() == 0.0
    values = []
    for step in (0, 4, 9, 20):
        adapter.set_homotopy_step(step)
        values.append(adapter.connections["0_3"].gate_value())
    assert values == pytest.approx([0.1, 0.5, 1.0, 1.0])
    assert adapter.num_parameters() == len(PLAN) * 2 * 32 * 4  # the scheduled gate is not trained


def test_parameter_count_is_two_d_r_plus_gate():
    model = make_model("gpt2")
    assert make_adapter(model, "learned").num_parameters() == len(PLAN) * (2 * 32 * 4 + 1)
    assert make_adapter(model, "zero-init").num_parameters() == len(PLAN) * 2 * 32 * 4


def test_attaching_a_second_adapter_is_refused_until_the_first_is_detached():
    model = make_model("llama")
    handle = attach(model, make_adapter(model, "zero-init"))
    with pytest.raises(ValueError, match="already carries a solo adapter"):
        attach(model, make_adapter(model, "zero-init"))
    handle.detach()
    attach(model, make_adapter(model, "zero-init")).detach()


def test_disabled_context_runs_the_base_model_then_restores_the_adapter():
    model = make_model("llama")
    ids = inputs()
    base = model(ids).logits
    handle = attach(model, perturb(make_adapter(model, "schedule")))
    adapted = model(ids).logits
    assert not torch.equal(adapted, base)
    with handle.disabled():
        assert torch.equal(model(ids).logits, base)
    assert torch.equal(model(ids).logits, adapted)


def test_checkpointing_that_wraps_each_block_call_gives_the_same_gradients(monkeypatch):
    """Older transformers checkpoint around a block's __call__, so the hooks run again in backward.

    The stored sources must still be there then (they used to be cleared at the last destination:
    KeyError in backward)."""
    from torch.utils.checkpoint import checkpoint

    ids = inputs()
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    grads = []
    for wrapped in (False, True):
        model = make_model("llama")
        adapter = perturb(make_adapter(model, plan=[(-1, 1), (0, 2), (2, 3)]))
        attach(model, adapter)
        if wrapped:
            block_class = type(find_blocks(model)[1][0])

            def call(self, *args, **kwargs):
                if self.training:
                    return checkpoint(nn.Module.__call__, self, *args, use_reentrant=False, **kwargs)
                return nn.Module.__call__(self, *args, **kwargs)

            monkeypatch.setattr(block_class, "__call__", call)
        model.train()
        loss, _ = causal_lm_loss(model, batch)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in adapter.named_parameters()})
        monkeypatch.undo()
    for name in grads[0]:
        assert_close(grads[1][name], grads[0][name], rtol=1e-5, atol=1e-7)


def test_the_engine_and_an_export_run_the_same_modeling_file():
    """engine/adapter.py builds on modeling_solo.py, the file every export carries: the export's class,
    built in-process on the same base and tensors, gives the attached adapter's logits."""
    import copy

    from solo_cli.engine import modeling_solo

    model = make_model("llama")
    adapter = perturb(make_adapter(model, source_norm="rms"))
    assert all(isinstance(conn, modeling_solo.SoloConnection) for conn in adapter.connections.values())
    ids = inputs()
    handle = attach(model, adapter)
    assert isinstance(handle._hooks, modeling_solo.SoloHooks)
    expected = model(ids).logits
    handle.detach()
    config = copy.deepcopy(model.config)
    config.solo_adapter = {
        "connections": [list(c) for c in PLAN],
        "keys": list(adapter.connections),
        "rank": 4,
        "hidden_size": adapter.config.hidden_size,
        "gated": True,
        "source_norm": "rms",
        "blocks_path": find_blocks(model)[0],
    }
    exported = modeling_solo.solo_model_class(type(model))(config).eval()
    missing, unexpected = exported.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(key.startswith("solo.") for key in missing)
    exported.solo.load_state_dict(adapter.connections.state_dict())
    assert_close(exported(ids).logits, expected, rtol=1e-5, atol=1e-5)
