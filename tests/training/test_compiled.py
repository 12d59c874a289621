"""--compile: compiled decoder blocks keep the adapter's hooks, and give the eager logits."""

import torch
from support import inputs, make_adapter, perturb

from solo_cli import attach
from solo_cli.engine.blocks import find_blocks
from solo_cli.engine.models import load_model
from solo_cli.training.compiled import compiled_blocks


def test_compiled_blocks_give_the_eager_logits_with_the_adapter_attached(tiny_model_dir):
    model = load_model(tiny_model_dir).model.eval()
    adapter = perturb(make_adapter(model, gate="schedule"))
    handle = attach(model, adapter)
    ids = inputs(batch=2, length=9)
    with torch.no_grad():
        eager = model(input_ids=ids).logits
        with handle.disabled():
            base = model(input_ids=ids).logits
        with compiled_blocks(model, True):
            compiled = model(input_ids=ids).logits
            with handle.disabled():
                compiled_base = model(input_ids=ids).logits
    handle.detach()
    assert not torch.allclose(eager, base, atol=1e-3)  # the adapter changes the logits: the hooks ran
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(compiled_base, base, rtol=1e-4, atol=1e-4)
    assert all("forward" not in vars(block) for block in find_blocks(model)[1])  # eager again after the run
