"""An attached adapter's scale: 0 is the base model exactly, 1 as trained, x adds x times every connection's delta."""

import math

import pytest
import torch
from support import inputs, make_adapter, perturb
from tiny import make_model
from torch.testing import assert_close

from solo_cli import attach
from solo_cli.engine.blocks import find_blocks

INTO_LAST = [(-1, 3), (0, 3), (1, 3)]  # every connection ends in the last block: its sources do not depend on the scale


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("source_norm", ["none", "rms"])
def test_scale_zero_is_the_base_exactly_and_one_is_as_trained(arch, source_norm):
    model = make_model(arch)
    ids = inputs()
    base = model(ids).logits
    handle = attach(model, perturb(make_adapter(model, source_norm=source_norm)))
    trained = model(ids).logits
    assert not torch.allclose(trained, base)
    assert handle.scale == 1.0
    handle.scale = 0
    assert torch.equal(model(ids).logits, base)
    assert handle.stored_sources == 0  # at 0 nothing is captured either
    handle.scale = 0.5
    assert not torch.allclose(model(ids).logits, trained)
    handle.scale = 1
    assert torch.equal(model(ids).logits, trained)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_scale_multiplies_every_connections_delta(arch, scale):
    model = make_model(arch)
    handle = attach(model, perturb(make_adapter(model, plan=INTO_LAST)))
    _, blocks = find_blocks(model)
    seen = []
    blocks[3].register_forward_hook(lambda module, args, output: seen.append(output[0] if isinstance(output, tuple) else output))
    ids = inputs()

    def last_block(value):
        handle.scale = value
        model(ids)
        return seen.pop()

    base, trained, scaled = last_block(0), last_block(1), last_block(scale)
    assert_close(scaled - base, scale * (trained - base))


def test_scale_zero_generates_what_the_base_generates():
    model = make_model("llama")
    ids = inputs(batch=1, length=6)
    base = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=2)
    handle = attach(model, perturb(make_adapter(model)))
    assert not torch.equal(model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=2), base)
    handle.scale = 0.0
    assert torch.equal(model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=2), base)


@pytest.mark.parametrize("value", [-0.5, math.nan, math.inf])
def test_a_negative_or_non_finite_scale_is_refused(value):
    model = make_model("llama")
    handle = attach(model, make_adapter(model))
    with pytest.raises(ValueError, match="finite number >= 0"):
        handle.scale = value
    assert handle.scale == 1.0
