"""Training through the engine on a tiny model: the loss falls, only the adapter changes."""

import json

import pytest
import torch

from solo_cli import load_adapter
from solo_cli.engine.loss import evaluate_loss
from solo_cli.engine.models import load_model
from solo_cli.training.config import TrainConfig
from solo_cli.training.run import check_output, execute, prepare


def config(data, out, **kw):
    values = dict(
        data=str(data),
        output=str(out),
        connections="emb->2,1->3",
        rank=4,
        gate="zero-init",
        lr=1e-2,
        max_steps=30,
        batch_size=4,
        eval_every=10,
        seed=0,
        chat_template=False,
        device="cpu",
    )
    values.update(kw)
    return TrainConfig(**values).validate()


@pytest.mark.parametrize("gate", ["schedule", "zero-init"])
@pytest.mark.parametrize("source_norm", ["rms", "none"])
def test_loss_falls_and_base_weights_stay_frozen(tiny_model_dir, tiny_data, tmp_path, gate, source_norm):
    loaded = load_model(tiny_model_dir)
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    run = prepare(config(tiny_data, tmp_path / "run", gate=gate, source_norm=source_norm, lr=3e-2), loaded)
    pad = loaded.tokenizer.pad_token_id
    start_loss = evaluate_loss(loaded.model, run.train.examples, 8, pad, run.device)
    check_output(run.cfg)
    result = execute(run)
    after = loaded.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    adapter, info = load_adapter(result.adapter_path)
    from solo_cli import attach

    handle = attach(loaded.model, adapter)
    end_loss = evaluate_loss(loaded.model, run.train.examples, 8, pad, run.device)
    handle.detach()
    assert end_loss < start_loss - 0.3, (start_loss, end_loss)
    assert info.training["steps"] == 30 and info.data_format == "completion" and info.chat_template is False
    assert info.config.source_norm == source_norm


def test_run_folder_holds_every_output(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "run"
    cfg = config(tiny_data, out, max_steps=12, eval_every=4, save_every=4)
    run = prepare(cfg, load_model(tiny_model_dir))
    check_output(cfg)
    result = execute(run)
    names = {p.name for p in out.iterdir()}
    assert {"adapter.safetensors", "best", "checkpoints", "metrics.jsonl", "config.json", "loss.png"} <= names
    assert (out / "best" / "adapter.safetensors").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4", "step-8"]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in lines if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 13))
    assert {"step", "loss", "lr", "gate", "tokens_per_s", "elapsed", "remaining"} <= set(steps[0])
    assert [r["step"] for r in lines if "valid_loss" in r] == [4, 8, 12]
    assert json.loads((out / "config.json").read_text())["connections_resolved"] == "emb->2,1->3"
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert result.best_valid_loss == pytest.approx(min(r["valid_loss"] for r in lines if "valid_loss" in r), abs=1e-6)


def test_same_seed_gives_the_same_adapter(tiny_model_dir, tiny_data, tmp_path):
    tensors = []
    for name in ("a", "b"):
        cfg = config(tiny_data, tmp_path / name, max_steps=5, gate="schedule")
        run = prepare(cfg, load_model(tiny_model_dir))
        check_output(cfg)
        adapter, _ = load_adapter(execute(run).adapter_path)
        tensors.append(adapter.state_dict())
    for key in tensors[0]:
        assert torch.equal(tensors[0][key], tensors[1][key])


def test_grad_accumulation_matches_a_larger_batch(tiny_model_dir, tiny_data, tmp_path):
    results = []
    for name, batch, accum in (("big", 8, 1), ("accum", 4, 2)):
        cfg = config(tiny_data, tmp_path / name, max_steps=3, batch_size=batch, grad_accum=accum, gate="schedule")
        run = prepare(cfg, load_model(tiny_model_dir))
        check_output(cfg)
        adapter, _ = load_adapter(execute(run).adapter_path)
        results.append(adapter.state_dict())
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-4, atol=1e-6)
