"""LoRA on q and v is counted one way: `solo inspect --model`'s parameter table (training/plan_cost.py), the memory
estimate (engine/memory_estimate.py) and peft's own LoRA agree, a fused projection (GPT-2's c_attn) adapted whole."""

import pytest
from tiny import make_model, save_tiny

from solo_cli.engine.memory_estimate import train_memory
from solo_cli.training.plan_cost import plan_report

# peft's LoRA targets for q and v (its defaults for gpt2, llama and falcon); phi3 and falcon fuse q, k and v into one
# projection with fewer key/value heads than query heads, so a third of it is not a query's size.
TARGETS = {"gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"], "phi3": ["qkv_proj"], "falcon": ["query_key_value"]}


@pytest.mark.parametrize("arch", sorted(TARGETS))
def test_the_parameter_table_the_memory_estimate_and_peft_count_the_same_lora(arch, tmp_path):
    from peft import LoraConfig, get_peft_model

    table = plan_report(save_tiny(tmp_path, arch), "0->3", 2)["lora_qv_r4"]["trainable_params"]
    estimate = train_memory(make_model(arch).config, method="lora-qv", rank=4, batch_size=1, seq_len=8).trainable_params
    peft_model = get_peft_model(make_model(arch), LoraConfig(r=4, target_modules=TARGETS[arch]))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert table == estimate == trainable
