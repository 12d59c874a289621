"""The base's weight bytes (engine/weight_memory.py): as --quantize stores them, and as a model that came quantized
says in its config's quantization_config (bitsandbytes, GPTQ, AWQ, compressed-tensors)."""

import pytest
from transformers import AutoConfig

from solo_cli.engine import weight_memory as wm

D_IN, D_OUT = 256, 512
N = D_IN * D_OUT


def test_a_4bit_linear_is_half_a_byte_a_weight_plus_its_absmax():
    assert wm.linear_bytes(128, 256, "nf4", "bfloat16") == 128 * 256 // 2 + 4 * (128 * 256 // 64)
    assert wm.linear_bytes(32, 64, "nf4", "bfloat16") == 32 * 64 * 2  # narrower than a block of 64: unquantized
    assert wm.linear_bytes(128, 256, "int8", "bfloat16") == 128 * 256 + 4 * 256
    assert wm.linear_bytes(128, 256, "torchao-int8", "bfloat16") == 128 * 256 + 2 * 256
    assert wm.linear_bytes(128, 256, "none", "float32") == 128 * 256 * 4


def config_with(quantization_config: dict | None):
    config = AutoConfig.for_model("llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, vocab_size=320)
    if quantization_config is not None:
        config.quantization_config = quantization_config
    return config


BNB_NF4 = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}


@pytest.mark.parametrize(
    ("quant", "name", "expected"),
    [
        (BNB_NF4, "nf4", N // 2 + 4 * N // 64),
        (BNB_NF4 | {"bnb_4bit_use_double_quant": True}, "nf4", N // 2 + N // 64 + 4 * N // 64 // 256),  # 8-bit absmax
        ({"quant_method": "bitsandbytes", "load_in_8bit": True}, "int8", N + 4 * D_OUT),
        # 4 bits a weight, per 128 inputs of a row a float16 scale and a 4-bit zero point, an int32 g_idx per input
        ({"quant_method": "gptq", "bits": 4, "group_size": 128}, "gptq", N // 2 + (N // 128) * (2 + 0.5) + 4 * D_IN),
        ({"quant_method": "gptq", "bits": 8, "group_size": -1}, "gptq", N + D_OUT * (2 + 1) + 4 * D_IN),  # a group a row
        ({"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": True}, "awq", N // 2 + (N // 64) * 2.5),
        (
            {
                "quant_method": "compressed-tensors",
                "format": "pack-quantized",
                "config_groups": {
                    "group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "strategy": "group", "group_size": 128}}
                },
            },
            "compressed-tensors",
            N // 2 + (N // 128) * 2,
        ),
        (
            {
                "quant_method": "compressed-tensors",
                "format": "float-quantized",
                "config_groups": {"group_0": {"weights": {"num_bits": 8, "type": "float", "strategy": "channel"}}},
            },
            "compressed-tensors",
            N + 2 * D_OUT,
        ),
    ],
)
def test_a_model_that_came_quantized_is_costed_as_its_config_stores_it(quant, name, expected):
    packing = wm.stored_packing(config_with(quant))
    assert packing.name == name
    assert wm.linear_bytes(D_IN, D_OUT, packing, "float32") == int(expected)


def test_a_model_not_quantized_has_no_stored_packing():
    assert wm.stored_packing(config_with(None)) is None
    assert wm.stored_packing(config_with({"quant_method": "mystery"})) is None  # costed at the compute dtype
    sparse_only = {"quant_method": "compressed-tensors", "config_groups": {}, "sparsity_config": {"format": "dense"}}
    assert wm.stored_packing(config_with(sparse_only)) is None
