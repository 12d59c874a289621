"""Every tiny architecture end to end: train a few steps, generate, merge and export.

Exactness of a fresh adapter and of the loss is checked per architecture in test_adapter.py and
test_loss.py; this file proves the commands work on each of them."""

import pytest
import torch
from support import inputs
from tiny import ARCHS, save_tiny
from torch.testing import assert_close

from solo_cli import attach, load_adapter
from solo_cli.engine.models import load_model
from solo_cli.inference.generation import GenerationSettings, generate
from solo_cli.merging.combine import merge_adapters
from solo_cli.merging.export import export_model
from solo_cli.training.config import TrainConfig
from solo_cli.training.run import check_output, execute, prepare


@pytest.mark.parametrize("arch", ARCHS)
def test_train_generate_merge_export(arch, tiny_data, tmp_path):
    model_dir = save_tiny(tmp_path / arch, arch)
    cfg = TrainConfig(
        model=model_dir,
        data=str(tiny_data),
        output=str(tmp_path / "run"),
        connections="emb->2,1->3",
        rank=2,
        max_steps=3,
        batch_size=4,
        lr=5e-2,
        chat_template=False,
        device="cpu",
    ).validate()
    loaded = load_model(model_dir)
    run = prepare(cfg, loaded)
    check_output(cfg)
    result = execute(run)
    adapter, info = load_adapter(result.adapter_path)
    assert info.training["steps"] == 3 and all(torch.isfinite(t).all() for t in adapter.state_dict().values())

    handle = attach(loaded.model, adapter)
    text = generate(loaded.model, loaded.tokenizer, ["name[Place 1] ->"], GenerationSettings(max_new_tokens=4), chat=False)
    assert len(text) == 1 and isinstance(text[0], str)
    ids = inputs()
    expected = loaded.model(ids).logits
    handle.detach()

    merged = merge_adapters([result.adapter_path, result.adapter_path], [0.5, 0.5])
    handle = attach(loaded.model, merged.adapter)
    assert_close(loaded.model(ids).logits, expected, rtol=1e-4, atol=1e-5)  # the average of an adapter with itself
    handle.detach()

    exported = export_model(result.adapter_path, model_dir, tmp_path / "export")
    assert exported.max_abs_diff <= 1e-4 and exported.greedy_equal
