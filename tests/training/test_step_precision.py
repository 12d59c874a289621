"""One training step: the run's one precision decision drives loss scaling and autocast, the first
update moves A and B, and nothing the hooks stored outlives the backward pass."""

import pytest
import torch
from test_training import config

from solo_cli import attach
from solo_cli.data.row_encoding import collate
from solo_cli.engine.adapter import _ATTACHED
from solo_cli.engine.loss import fast_path
from solo_cli.engine.models import load_model
from solo_cli.engine.precision import Hardware, resolve_precision
from solo_cli.training.run import prepare
from solo_cli.training.trainer import Trainer, TrainState


def _trainer(run, **kw):
    pad = run.loaded.tokenizer.pad_token_id
    return Trainer(run.loaded.model, run.adapter, run.cfg, pad, run.device, run.steps, ctx=None, **kw)


def test_auto_pinned_to_float16_trains_with_a_grad_scaler(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    """The model was float16 but the scaler followed the typed --dtype (auto), so none ran."""
    monkeypatch.setenv("SOLO_AUTO_DTYPE", "float16")
    run = prepare(config(tiny_data, tmp_path / "run", model=tiny_model_dir, dtype="auto"))
    assert next(run.loaded.model.parameters()).dtype == torch.float16
    assert run.loaded.precision.grad_scaler and run.loaded.precision.autocast is None
    trainer = _trainer(run, precision=run.loaded.precision)
    assert trainer.scaler.is_enabled()


def test_float32_on_a_gpu_without_native_bf16_runs_no_autocast(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    """torch.cuda.is_bf16_supported() says True for emulated bf16 (T4, V100); the trainer used to autocast there."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    emulated = resolve_precision("float32", "cuda", hardware=Hardware("cuda", cuda_bf16=False))
    native = resolve_precision("float32", "cuda", hardware=Hardware("cuda", cuda_bf16=True))
    assert emulated.autocast is None and native.autocast == "bfloat16" and "autocast" in native.reason
    run = prepare(config(tiny_data, tmp_path / "run"), load_model(tiny_model_dir))
    pad = run.loaded.tokenizer.pad_token_id
    cuda = torch.device("cuda")  # constructing the trainer touches no GPU
    trainer = Trainer(run.loaded.model, run.adapter, run.cfg, pad, cuda, run.steps, precision=emulated)
    assert trainer.autocast is None and not trainer.scaler.is_enabled()
    run.adapter.to("cpu")
    assert Trainer(run.loaded.model, run.adapter, run.cfg, pad, cuda, run.steps, precision=native).autocast == torch.bfloat16


def test_the_first_update_moves_both_a_and_b(tiny_model_dir, tiny_data, tmp_path):
    """At t = 0 the first step gave A and B no gradient; step s now trains at t = (s + 1) / H."""
    run = prepare(config(tiny_data, tmp_path / "run", gate="schedule", weight_decay=0.0, max_steps=1), load_model(tiny_model_dir))
    assert all(v == 0.0 for v in run.adapter.gate_values().values())  # fresh: exactly the base model
    before = {k: v.clone() for k, v in run.adapter.state_dict().items()}
    handle = attach(run.loaded.model, run.adapter)
    try:
        _trainer(run).run(run.train.examples, TrainState(), lambda state: None, lambda state: None)
    finally:
        handle.detach()
    for key, value in run.adapter.state_dict().items():
        if key.endswith((".A", ".B")):
            assert not torch.equal(value, before[key]), f"{key} did not move in the first step"


@pytest.mark.parametrize("grad_checkpoint", [False, True])
def test_no_hidden_state_outlives_a_steps_backward(tiny_model_dir, tiny_data, tmp_path, grad_checkpoint):
    """The loss runs the model's body alone (the shortcut), so the model's pre-hook that dropped the
    stored sources never fired: a step's hidden states stayed alive through the optimizer step."""
    from solo_cli.training.memory import activation_checkpointing

    run = prepare(config(tiny_data, tmp_path / "run", gate="schedule"), load_model(tiny_model_dir))
    model = run.loaded.model
    trainer = _trainer(run)
    batch = run.train.examples[:4]
    with activation_checkpointing(model, grad_checkpoint):
        handle = attach(model, run.adapter)
        try:
            run.adapter.set_homotopy_step(0)
            model.train()
            assert fast_path(model, collate(batch, trainer.pad_id)) is not None  # the shortcut is the path taken
            trainer._step([batch])
            assert _ATTACHED[model].stored_sources == 0
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in run.adapter.parameters())
        finally:
            handle.detach()
