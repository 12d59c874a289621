"""Output that says what it means: the flag a message blames exists, --force is offered only where it works,
and `solo inspect` shows numbers as people read them."""

import dataclasses

import pytest
from support import assert_one_line, info_for, make_adapter, perturb, run
from tiny import make_model

from solo_cli import save_adapter
from solo_cli.engine.adapter import AdapterConfig, SoloAdapter
from solo_cli.engine.models import load_model
from solo_cli.errors import UsageError
from solo_cli.inference.load import load_for_inference


@pytest.mark.parametrize("command", [["inspect"], ["merge", "-o", "m.safetensors"]])
def test_a_hub_id_that_cannot_be_fetched_is_named_as_the_argument_it_is_not_an_adapter_flag(tmp_path, monkeypatch, command):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, lines = run(*command, "me/solo-e2e")
    assert code == 2
    error = assert_one_line(lines, "error: adapter me/solo-e2e: no such local path", "HF_HUB_OFFLINE")
    assert "--adapter" not in error


def adapter_for(tmp_path, model, **fingerprint):
    """An adapter whose header says it was trained on a base of ``fingerprint``'s shape (the rest: ``model``'s)."""
    info = info_for(model, make_adapter(model, "schedule", plan=[(0, 3)], rank=2))
    info = dataclasses.replace(info, fingerprint=dataclasses.replace(info.fingerprint, **fingerprint))
    config = AdapterConfig([(0, 3)], 2, "schedule", 10, info.fingerprint.hidden_size, source_norm="none")
    adapter = SoloAdapter(config)
    return save_adapter(tmp_path / "a.safetensors", adapter, dataclasses.replace(info, config=config))


@pytest.mark.parametrize("force", [False, True])
def test_force_is_not_offered_for_an_adapter_whose_connections_cannot_fit_the_model(tiny_model_dir, tmp_path, force):
    model = load_model(tiny_model_dir).model
    path = adapter_for(tmp_path, model, hidden_size=48)
    with pytest.raises(UsageError) as caught:
        load_for_inference(str(tiny_model_dir), str(path), force=force)
    assert "cannot fit that model; pass the matching --model" in caught.value.as_flags()
    assert "--force" not in caught.value.as_flags()


def test_force_is_offered_where_it_works_and_then_attaches(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir).model
    path = adapter_for(tmp_path, model, vocab_size=model.get_input_embeddings().weight.shape[0] + 1)
    with pytest.raises(UsageError) as caught:
        load_for_inference(str(tiny_model_dir), str(path))
    assert caught.value.as_flags().endswith("pass the matching --model, or --force to attach it anyway")
    target = load_for_inference(str(tiny_model_dir), str(path), force=True)
    target.handle.detach()
    assert target.warnings and target.warnings[0].endswith("attaching anyway because of --force")


def test_inspect_rounds_training_numbers_and_summarises_a_merges_errors(tmp_path):
    model = make_model("llama")
    a = perturb(make_adapter(model, "schedule", plan=[(0, 3), (1, 3)], rank=3, seed=0))
    b = perturb(make_adapter(model, "schedule", plan=[(0, 3), (1, 3)], rank=3, seed=1))
    info = info_for(model, a)
    info = dataclasses.replace(info, training={"steps": 3, "final_loss": 1.727623484959112, "lr": 0.02})
    a_path = save_adapter(tmp_path / "a.safetensors", a, info)
    b_path = save_adapter(tmp_path / "b.safetensors", b, info_for(model, b))
    code, lines = run("inspect", a_path)
    assert code == 0 and "training: steps=3, final_loss=1.728, lr=0.02" in lines, lines
    merged = tmp_path / "m.safetensors"
    assert run("merge", a_path, b_path, "--rank", 2, "-o", merged)[0] == 0
    code, lines = run("inspect", merged)
    training = next(line for line in lines if line.startswith("training: "))
    assert "reconstruction_error=max " in training and ", mean " in training and " over 2 connections" in training
    assert "{" not in training, training
