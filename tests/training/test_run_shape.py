"""A resumed run is the run it continues: its steps (grad accumulation never crosses an epoch), its
shape (processes, global batch, steps), its base weights and its settings, even with config.json
gone; damaged checkpoints and torn metrics end in one line."""

import json
import shutil
import signal

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_resume import config, signal_at, train
from typer.testing import CliRunner

from solo_cli import load_adapter
from solo_cli.cli import app
from solo_cli.engine.models import load_model
from solo_cli.errors import UsageError
from solo_cli.training.config import TrainConfig
from solo_cli.training.distributed import DistContext
from solo_cli.training.run import check_output, execute, prepare
from solo_cli.training.sampler import step_batches, total_steps
from solo_cli.training.trainer import Interrupted


def _epoch(examples, batch, accum, lengths=None):
    steps = total_steps(TrainConfig(batch_size=batch, grad_accum=accum, epochs=1), len(examples))
    stream = step_batches(examples, batch, seed=0, lengths=lengths, accum=accum)
    return [next(stream) for _ in range(steps)]


@pytest.mark.parametrize("grouped", [False, True])
def test_one_epoch_with_grad_accum_trains_every_example_once(grouped):
    """10 examples, batch 4, accum 2: steps of 8 then 2; the last step used to borrow 4 from the next epoch."""
    examples = list(range(10))
    lengths = [(i * 7) % 5 + 1 for i in examples] if grouped else None
    steps = _epoch(examples, 4, 2, lengths)
    assert [[len(b) for b in step] for step in steps] == [[4, 4], [2]]
    assert sorted(i for step in steps for batch in step for i in batch) == examples
    big = _epoch(examples, 8, 1, lengths)  # the same examples meet in the same step as with batch 8
    assert [sorted(sum(step, [])) for step in steps] == [sorted(sum(step, [])) for step in big]


def test_grad_accum_2_trains_the_adapter_of_batch_8(tiny_model_dir, tiny_data, tmp_path):
    rows = (tiny_data / "train.jsonl").read_text().splitlines()[:10]
    data = tmp_path / "ten.jsonl"
    data.write_text("\n".join(rows) + "\n")
    runs = {}
    for name, batch, accum in (("accum", 4, 2), ("big", 8, 1)):
        cfg = config(data, tmp_path / name, batch_size=batch, grad_accum=accum, max_steps=None, epochs=2, eval_every=100)
        runs[name] = train(tiny_model_dir, cfg)
    assert runs["accum"].steps == runs["big"].steps == 4  # 2 an epoch: 8 examples, then 2
    a, _ = load_adapter(runs["accum"].adapter_path)
    b, _ = load_adapter(runs["big"].adapter_path)
    for key, value in b.state_dict().items():
        torch.testing.assert_close(a.state_dict()[key], value, rtol=1e-4, atol=1e-6)


def _interrupted(model_dir, data, out, **kw):
    with pytest.raises(Interrupted):
        train(model_dir, config(data, out, **kw), signal_at(3, signal.SIGINT))
    return out / "checkpoints" / "step-3"


def test_resume_on_another_number_of_processes_is_refused(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _interrupted(tiny_model_dir, tiny_data, out)
    recorded = json.loads((out / "config.json").read_text())["run_shape"]
    assert recorded | {"world_size": 1, "global_batch": 4, "total_steps": 10} == recorded
    state = json.loads((out / "checkpoints" / "step-3" / "trainer_state.json").read_text())
    assert state["config"]["run_shape"] == recorded and state["data_steps"] == 3
    cfg = config(tiny_data, out, resume="auto")
    check_output(cfg)  # the settings are the run's; only the number of processes differs
    monkeypatch.setattr("solo_cli.training.distributed.init", lambda ctx, device: None)  # stand for a 2-process launch
    monkeypatch.setattr(DistContext, "barrier", lambda self: None)
    run = prepare(cfg, load_model(tiny_model_dir), ctx=DistContext(0, 2, 0))
    run.ctx = DistContext()  # train in this process: the refusal must come before any step
    with pytest.raises(UsageError) as info:
        execute(run)
    line = info.value.as_flags()
    assert "\n" not in line and "processes 1 -> 2, global batch 4 -> 8" in line and "--batch-size" in line


def test_resume_on_changed_local_weights_is_refused(tiny_model_dir, tiny_data, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    out = tmp_path / "run"
    _interrupted(str(model), tiny_data, out, model=str(model))
    digest = json.loads((out / "config.json").read_text())["weights_digest"]
    assert len(digest) == 64
    weights = next(model.glob("*.safetensors"))
    tensors = load_file(weights)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 0.01  # same architecture, other weights (same size: only contents differ)
    save_file(tensors, str(weights), metadata={"format": "pt"})
    cfg = config(tiny_data, out, model=str(model), resume="auto")
    with pytest.raises(UsageError, match=r"the weights of model .* changed \(sha256 " + digest[:12]):
        train(str(model), cfg)


def test_resume_without_config_json_compares_with_the_checkpoint(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "run"
    _interrupted(tiny_model_dir, tiny_data, out)
    (out / "config.json").unlink()
    with pytest.raises(UsageError, match="other settings: lr 0.01 -> 0.02"):
        check_output(config(tiny_data, out, resume="auto", lr=2e-2))
    from solo_cli.files.lock import release

    release(out)
    resumed = train(tiny_model_dir, config(tiny_data, out, resume="auto"))
    assert resumed.steps == 10


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda text: text[: len(text) // 2], "not JSON"),
        (lambda text: json.dumps(json.loads(text) | {"step": "3"}), "step is str"),
        (lambda text: json.dumps(json.loads(text) | {"optimizer_groups": None}), "optimizer_groups is NoneType"),
        (lambda text: "[1, 2]", "holds list, not an object"),
    ],
)
def test_a_damaged_trainer_state_is_refused_naming_the_file(tiny_model_dir, tiny_data, tmp_path, damage, reason):
    out = tmp_path / "run"
    state = _interrupted(tiny_model_dir, tiny_data, out) / "trainer_state.json"
    state.write_text(damage(state.read_text()))
    args = ["train", "--model", tiny_model_dir, "--data", str(tiny_data), "-o", str(out), "--resume", "auto"]
    args += ["--connections", "emb->2,1->3", "--rank", "4", "--gate", "schedule", "--lr", "1e-2", "--max-steps", "10"]
    args += ["--batch-size", "4", "--eval-every", "3", "--save-every", "3", "--seed", "0", "--no-chat-template"]
    args += ["--device", "cpu", "--warmup", "2", "--weight-decay", "0.01"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert f"{state} is damaged ({reason}" in " ".join(result.output.split())


def test_a_torn_last_metrics_line_is_dropped_on_resume(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "run"
    _interrupted(tiny_model_dir, tiny_data, out)
    metrics = out / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 4, "lo')  # a crash mid-write
    resumed = train(tiny_model_dir, config(tiny_data, out, resume="auto"))
    assert resumed.steps == 10
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if '"loss"' in line]
    assert steps == list(range(1, 11))


def test_a_checkpoint_that_counted_micro_batches_resumes_where_the_orders_agree(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "run"
    state_file = _interrupted(tiny_model_dir, tiny_data, out) / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["data_steps"], state["config"]
    state_file.write_text(json.dumps(state | {"micro_batches": 3}))  # as solo wrote it before: one micro-batch a step
    assert train(tiny_model_dir, config(tiny_data, out, resume="auto")).steps == 10


def test_old_micro_batch_positions_convert_only_where_the_orders_agree(tmp_path):
    from solo_cli.training.checkpoint import _legacy_position
    from solo_cli.training.shape import RunShape

    accum2 = RunShape(world_size=1, batch_size=4, grad_accum=2, examples=10, total_steps=4, homotopy_steps=1)
    _legacy_position(tmp_path, {"step": 1, "micro_batches": 2}, accum2)  # still inside the first epoch
    with pytest.raises(UsageError, match="data order differs from this one's after step 1"):
        _legacy_position(tmp_path, {"step": 2, "micro_batches": 4}, accum2)  # step 2 borrowed from epoch 2
    even = RunShape(world_size=1, batch_size=4, grad_accum=2, examples=16, total_steps=4, homotopy_steps=1)
    _legacy_position(tmp_path, {"step": 3, "micro_batches": 6}, even)  # 4 micro-batches an epoch: whole steps
    with pytest.raises(UsageError):
        _legacy_position(tmp_path, {"step": 3, "micro_batches": 5}, even)
