"""The training memory estimate (engine/memory_estimate.py): its parts by hand on a tiny model, and its order."""

import pytest
import torch
from tiny import HIDDEN, LAYERS, VOCAB, make_model

from solo_cli.engine import memory_estimate as me
from solo_cli.engine.adapter import AdapterConfig, SoloAdapter, attach, release_sources
from solo_cli.engine.blocks import find_blocks
from solo_cli.errors import UsageError

B, T = 2, 16


@pytest.fixture(scope="module")
def config():
    return make_model("llama").config


def estimate(config, **kw):
    return me.train_memory(config, **({"batch_size": B, "seq_len": T} | kw))


def test_weights_adapter_and_optimizer_are_counted_by_hand(config):
    model = make_model("llama")
    numel = sum(p.numel() for p in model.parameters())  # tied embeddings count once
    plan = "0->3,1->3"
    est = estimate(config, connections=plan, rank=4)
    trainable = 2 * 2 * HIDDEN * 4  # two connections, A and B of rank 4
    assert est.trainable_params == trainable
    assert est.parts["weights"] == 4 * numel
    assert (est.parts["adapter"], est.parts["gradients"], est.parts["optimizer"]) == (4 * trainable, 4 * trainable, 8 * trainable)
    assert est.parts["gathered"] == 0
    positions = B * (T - 1)  # solo projects only the positions that carry loss
    assert est.parts["loss"] == positions * VOCAB * 12 + positions * HIDDEN * 4
    assert est.total == sum(est.parts.values())


def test_lora_counts_r_times_in_plus_out_on_its_layers(config):
    model = make_model("llama")
    _, blocks = find_blocks(model)
    linears = [m for m in blocks.modules() if isinstance(m, torch.nn.Linear)]
    qv = [m for n, m in blocks.named_modules() if n.endswith(("q_proj", "v_proj"))]
    assert estimate(config, method="lora-all", rank=8).trainable_params == sum(
        8 * (m.in_features + m.out_features) for m in linears
    )
    assert estimate(config, method="lora-qv", rank=8).trainable_params == sum(8 * (m.in_features + m.out_features) for m in qv)
    full = estimate(config, method="lora-all", rank=8).parts["loss"]
    assert full == B * T * VOCAB * 12 + B * T * HIDDEN * 4  # peft and transformers project every position


def real_saved(model, plan, rank, autocast=False):
    """What a real forward with a real adapter keeps, counted the same way, on real tensors (under CPU bf16 autocast)."""
    adapter = SoloAdapter(AdapterConfig(plan, rank, "schedule", 10, HIDDEN, source_norm="rms"))
    adapter.set_homotopy_step(0)
    attach(model, adapter)
    _, blocks = find_blocks(model)
    trace = me._Trace([0] * len(blocks), 0)
    skip = {me._storage_key(p)[0] for p in model.parameters()}
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, -3:] = 0  # a padded batch: its attention mask is materialised, as the fake trace assumes
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    with me.saved_by_module(blocks, trace, skip, adapter.connections.values()), cast:
        model.base_model(input_ids=torch.randint(0, VOCAB, (B, T)), attention_mask=mask, use_cache=False)
    release_sources(model)
    return trace


def test_the_fake_trace_keeps_what_a_real_forward_keeps(config):
    """Activations traced on fake tensors (no weights) equal those a real forward saves, block by block."""
    plan = [(0, 2), (1, 3)]
    real = real_saved(make_model("llama"), plan, 4)
    fake_model, mode = me._fake_model(config, "float32", False)
    _, blocks = find_blocks(fake_model)
    with mode:
        fake = me._trace(fake_model, blocks, "solo", plan, 4, B, T, HIDDEN, "float32")
    assert fake.per_block == real.per_block
    assert fake.connections == real.connections
    assert fake.per_block[:3] == [0, 0, 0]  # nothing below and at the lowest destination records a backward
    assert fake.per_block[3] > 0


def test_solo_needs_less_than_lora_on_all_layers(config):
    solo = estimate(config, connections="0->3", rank=3)
    lora = estimate(config, method="lora-all", rank=8)
    assert solo.total < lora.total
    assert solo.parts["activations"] < lora.parts["activations"]


def test_quantized_weights_are_smaller_in_order():
    from transformers import AutoConfig

    wide = AutoConfig.for_model("llama", hidden_size=128, intermediate_size=256, num_hidden_layers=2, vocab_size=VOCAB)
    wide.num_attention_heads, wide.num_key_value_heads = 4, 2
    weights = {
        (q, d): estimate(wide, quantize=q, dtype=d).parts["weights"]
        for q, d in [("nf4", "bfloat16"), ("none", "bfloat16"), ("none", "float32"), ("int8", "bfloat16")]
    }
    assert (
        weights[("nf4", "bfloat16")]
        < weights[("int8", "bfloat16")]
        < weights[("none", "bfloat16")]
        < weights[("none", "float32")]
    )
    assert weights[("none", "bfloat16")] * 2 == weights[("none", "float32")]


def test_fsdp_per_process_is_less_than_one_process(config):
    one = estimate(config)
    shard = estimate(config, world_size=4, parallel="fsdp")
    assert shard.parts["weights"] == -(-one.parts["weights"] // 4)
    assert shard.parts["weights"] + shard.parts["gathered"] < one.parts["weights"]
    assert shard.total < one.total
    assert estimate(config, world_size=4, parallel="ddp").parts["weights"] == one.parts["weights"]


def test_grad_checkpoint_keeps_less(config):
    plain = estimate(config, method="lora-all", rank=8, seq_len=64)
    ckpt = estimate(config, method="lora-all", rank=8, seq_len=64, grad_checkpoint=True)
    assert ckpt.parts["activations"] < plain.parts["activations"]


def test_bad_choices_are_refused_in_one_error(config):
    with pytest.raises(UsageError) as exc:
        estimate(config, method="dora", quantize="nf3", batch_size=0)
    text = str(exc.value)
    assert "method" in text and "quantize" in text and "batch_size" in text
    assert "\n" not in text


def test_layers_constant_is_the_tiny_models(config):
    assert config.num_hidden_layers == LAYERS


def test_an_estimate_leaves_nothing_fake_behind_for_real_runs(config):
    """The connection caches a constant per (device, dtype, width); one made while tracing must not reach a real run."""
    from torch._subclasses.fake_tensor import FakeTensor

    from solo_cli.engine import modeling_solo

    estimate(config, connections="0->3", rank=2)
    assert not any(isinstance(v, FakeTensor) for v in modeling_solo._EPS.values())
    model = make_model("llama")
    adapter = SoloAdapter(AdapterConfig([(0, 3)], 2, "learned", 10, HIDDEN, source_norm="rms"))
    attach(model, adapter)
    model(input_ids=torch.zeros(1, 4, dtype=torch.long)).logits.sum().backward()
    assert adapter.connections["0_3"].A.grad is not None


def test_an_architecture_that_cannot_be_traced_gets_a_rough_count(monkeypatch, config):
    def fails(*args, **kwargs):
        raise RuntimeError("data-dependent")

    traced = estimate(config, method="lora-all", rank=8)
    monkeypatch.setattr(me, "_trace", fails)
    rough = estimate(config, method="lora-all", rank=8)
    assert traced.traced and not rough.traced
    assert (traced.activations_method, rough.activations_method) == ("traced", "rough")
    assert rough.to_dict()["activations_method"] == "rough"
    assert rough.trainable_params == traced.trainable_params
    state = B * T * HIDDEN * 4
    assert rough.parts["activations"] == 16 * state * LAYERS
    # solo records only the blocks above its lowest destination, as the trace finds (the destination itself: none)
    assert estimate(config, connections="0->2", rank=2).parts["activations"] == 16 * state * (LAYERS - 3)
    assert estimate(config, connections="emb->0", rank=2).parts["activations"] == 16 * state * (LAYERS - 1)


def test_a_mixture_of_experts_base_is_costed_roughly_and_quietly(capfd):
    """A float32 Mixtral: its experts' grouped matmul cannot run on fake tensors (torch's meta kernel wants bf16), so
    the activations are a rough count, said so, with no traceback on stderr; Solo's still records fewer blocks."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(
        "mixtral", num_hidden_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, vocab_size=VOCAB, num_local_experts=4, num_experts_per_tok=2,
    )  # fmt: skip
    capfd.readouterr()
    solo, lora = estimate(config, connections="0->1", rank=2), estimate(config, method="lora-all", rank=8)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "failed while attempting" not in err, err[:2000]
    assert (solo.activations_method, lora.activations_method) == ("rough", "rough")
    assert solo.parts["activations"] * LAYERS == lora.parts["activations"] * (LAYERS - 2)


def test_the_fake_lora_trace_keeps_what_peft_keeps(config):
    """LoRA on every linear layer, dropout included (each layer's dropped input copy): the fake trace keeps at least
    what peft's real forward keeps, and at most 15% more (it errs towards needing more: about 500 bytes a position
    more per block here, the size of a one-byte dropout mask per input element, which the real CPU forward does not
    keep)."""
    from peft import LoraConfig, get_peft_model

    model = make_model("llama")
    targets = sorted({n.rsplit(".", 1)[-1] for n, m in find_blocks(model)[1].named_modules() if isinstance(m, torch.nn.Linear)})
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=me.LORA_DROPOUT, target_modules=targets)
    peft_model = get_peft_model(model, lora).train()
    _, blocks = find_blocks(model)
    real = me._Trace([0] * len(blocks), 0)
    skip = {me._storage_key(p)[0] for p in model.parameters()}
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, -3:] = 0
    with me.saved_by_module(blocks, real, skip, []):
        peft_model.base_model.model.model(input_ids=torch.randint(0, VOCAB, (B, T)), attention_mask=mask, use_cache=False)
    fake_model, mode = me._fake_model(config, "float32", False)
    _, fake_blocks = find_blocks(fake_model)
    with mode:
        fake = me._trace(fake_model, fake_blocks, "lora-all", [], 8, B, T, HIDDEN, "float32")
    assert all(0 < r < f <= 1.15 * r for f, r in zip(fake.per_block, real.per_block)), (fake.per_block, real.per_block)


def test_the_fake_trace_under_autocast_keeps_what_a_real_autocast_forward_keeps(config):
    """A float32 base on a native-bf16 GPU trains under bf16 autocast, which keeps a bf16 copy of every weight a
    recording block multiplies by (and bf16 activations): the estimate traces under the run's autocast (on the CPU,
    CPU autocast), and keeps what a real CPU-autocast forward keeps, block by block."""
    plan = [(0, 1), (1, 3)]
    real = real_saved(make_model("llama"), plan, 4, autocast=True)
    plain = real_saved(make_model("llama"), plan, 4)
    fake_model, mode = me._fake_model(config, "float32", False)
    _, blocks = find_blocks(fake_model)
    with mode, torch.autocast("cpu", dtype=torch.bfloat16):
        fake = me._trace(fake_model, blocks, "solo", plan, 4, B, T, HIDDEN, "float32")
    assert fake.per_block == real.per_block != plain.per_block
    assert fake.connections == real.connections


def test_the_estimate_counts_autocast_copies_of_the_weights(config):
    """At one short row the weights' bf16 copies outweigh the halved activations: the estimate under autocast is larger
    by at least each recording block's linear weights in bf16, and the head's."""
    model = make_model("llama")
    _, blocks = find_blocks(model)
    block_weights = sum(m.weight.numel() for m in blocks[3].modules() if isinstance(m, torch.nn.Linear))
    plain = me.train_memory(config, connections="0->2", batch_size=1, seq_len=2)
    cast = me.train_memory(config, connections="0->2", batch_size=1, seq_len=2, autocast="bfloat16")
    assert cast.parts["activations"] - plain.parts["activations"] > 2 * block_weights * 0.9
    assert cast.parts["loss"] - plain.parts["loss"] >= 2 * VOCAB * HIDDEN  # the head's bf16 copy


def test_a_model_that_came_quantized_is_costed_as_it_is_stored(config):
    """A config with a bitsandbytes nf4 quantization_config (no weights needed) costs its 4-bit weights, as
    --quantize nf4 would, and refuses another --quantize; FSDP is refused for a GPTQ base (its packed buffers)."""
    from transformers import AutoConfig

    wide = AutoConfig.for_model("llama", hidden_size=128, intermediate_size=256, num_hidden_layers=2, vocab_size=VOCAB)
    wide.num_attention_heads, wide.num_key_value_heads = 4, 2
    full = estimate(wide)
    nf4 = estimate(wide, quantize="nf4")
    wide.quantization_config = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    came = estimate(wide)
    assert came.quantize == "nf4" and came.to_dict()["quantize"] == "nf4"
    assert came.parts["weights"] == nf4.parts["weights"] < full.parts["weights"]
    with pytest.raises(UsageError, match=r"quantize int8: the model is already quantized \(nf4\)"):
        estimate(wide, quantize="int8")
    wide.quantization_config = {"quant_method": "gptq", "bits": 4, "group_size": 128}
    assert estimate(wide).quantize == "gptq"
    with pytest.raises(UsageError, match=r"parallel fsdp: the base's gptq weights cannot be sharded by FSDP"):
        estimate(wide, world_size=2, parallel="fsdp")


def test_every_fsdp_process_loads_the_whole_base_before_sharding(config):
    one, shard = estimate(config), estimate(config, world_size=4, parallel="fsdp")
    assert shard.load == one.load == one.parts["weights"] > shard.parts["weights"]
