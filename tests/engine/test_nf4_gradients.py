"""The adapter's gradients through a 4-bit base are right, on every CPU (issue 32, item 7).

On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a 4-bit weight for its ``gemv_4bit`` kernel after an
eval-mode forward without grad (a validation pass), and from then on every forward, training ones too,
goes through that kernel, which has no autograd formula: torch warned "bitsandbytes::gemv_4bit: an autograd
kernel was not registered ... may lead to silently incorrect behavior", and the gradient stopped at every
quantized layer. solo keeps every 4-bit layer on the dequantize-and-multiply path (engine/quantization.py,
``one_4bit_kernel``); here the gradients of A and B through an nf4 base are compared with those through the
same weights dequantized to float32, after a validation forward, with the repacking forced on any CPU.
"""

import warnings

import pytest
import torch
from support import inputs, make_adapter, perturb
from test_quantization import make_model64
from tiny import make_tokenizer

from solo_cli.engine import quantization
from solo_cli.engine.adapter import attach
from solo_cli.engine.loss import causal_lm_loss
from solo_cli.engine.models import load_model

pytestmark = pytest.mark.skipif(not quantization.installed("bitsandbytes"), reason="bitsandbytes is in the dev extra")


def dequantized_copy(full, quantized):
    """``full`` with every linear weight replaced by the dequantized float32 weight of the same layer of ``quantized``."""
    from bitsandbytes.functional import dequantize_4bit

    layers = dict(quantized.named_modules())
    for name, module in full.named_modules():
        weight = getattr(layers.get(name), "weight", None)
        if getattr(weight, "quant_state", None) is not None:
            module.weight.data = dequantize_4bit(weight.data, weight.quant_state).float().reshape(module.weight.shape)
    return full


def adapter_gradients(model, batch) -> dict[str, torch.Tensor]:
    """A and B's gradients after a validation forward (eval mode, no grad) and a training forward and backward."""
    torch.manual_seed(0)
    adapter = perturb(make_adapter(model, gate="schedule", plan=[(-1, 1), (0, 2), (1, 3)], rank=3), scale=0.05)
    handle = attach(model, adapter)
    adapter.set_homotopy_step(adapter.config.homotopy_steps)  # t = 1: every connection carries its whole path
    with torch.no_grad():
        causal_lm_loss(model, batch)  # what repacked the weights for the gradient-less kernel
    causal_lm_loss(model, batch)[0].backward()
    handle.detach()
    return {name: p.grad for name, p in adapter.named_parameters() if name.endswith((".A", ".B"))}


def test_the_adapter_gradients_through_an_nf4_base_are_those_through_its_float32_weights(tmp_path, monkeypatch):
    import bitsandbytes.nn.modules as bnb_modules

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)  # as on AVX512-BF16 and AMX CPUs, on any CPU
    make_model64().save_pretrained(tmp_path)
    make_tokenizer().save_pretrained(tmp_path)
    nf4 = load_model(str(tmp_path), quantize="nf4").model
    exact = dequantized_copy(load_model(str(tmp_path)).model, nf4)
    ids = inputs(batch=3, length=10)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        through_nf4 = adapter_gradients(nf4, batch)
    assert not [w for w in caught if "autograd kernel was not registered" in str(w.message)]
    through_float32 = adapter_gradients(exact, batch)
    assert through_nf4.keys() == through_float32.keys() and len(through_nf4) == 6
    for name, grad in through_float32.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(through_nf4[name], grad, rtol=1e-4, atol=1e-6, msg=name)
