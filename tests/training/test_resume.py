"""Interruption and resume: a run stopped by a signal and resumed ends where the uninterrupted run ends."""

import json
import os
import signal

import pytest
import torch
from typer.testing import CliRunner

from solo_cli import load_adapter
from solo_cli.cli import app
from solo_cli.cli.train import resume_command
from solo_cli.engine.models import load_model
from solo_cli.errors import RuntimeFailure, UsageError
from solo_cli.training.config import TrainConfig
from solo_cli.training.run import check_output, execute, prepare
from solo_cli.training.trainer import Interrupted


def config(data, out, **kw):
    values = dict(
        data=str(data),
        output=str(out),
        connections="emb->2,1->3",
        rank=4,
        gate="schedule",
        lr=1e-2,
        max_steps=10,
        batch_size=4,
        eval_every=3,
        save_every=3,
        seed=0,
        chat_template=False,
        device="cpu",
        warmup=2,
        weight_decay=0.01,
    )
    values.update(kw)
    return TrainConfig(**values).validate()


def train(model_dir, cfg, callback=None):
    run = prepare(cfg, load_model(model_dir, dtype=cfg.dtype))  # the model's precision is the run's
    check_output(cfg)
    return execute(run, callback)


def signal_at(step, signum):
    def callback(event, info):
        if event == "step" and info["step"] == step:
            os.kill(os.getpid(), signum)

    return callback


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_and_resumed_run_equals_the_uninterrupted_run(tiny_model_dir, tiny_data, tmp_path, signum):
    whole = train(tiny_model_dir, config(tiny_data, tmp_path / "whole"))
    out = tmp_path / "split"
    with pytest.raises(Interrupted, match="interrupted at step 4 of 10; checkpoint saved in .*step-4") as info:
        train(tiny_model_dir, config(tiny_data, out), signal_at(4, signum))
    assert info.value.exit_code == 130
    assert not (out / "adapter.safetensors").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3", "step-4"]
    resumed = train(tiny_model_dir, config(tiny_data, out, resume="auto"))
    a, _ = load_adapter(whole.adapter_path)
    b, _ = load_adapter(resumed.adapter_path)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=1e-5, atol=1e-7)
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert steps == list(range(1, 11))
    assert resumed.best_valid_loss == pytest.approx(whole.best_valid_loss, rel=1e-5)


def test_resume_from_an_explicit_checkpoint_and_keep_checkpoints(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_model_dir, config(tiny_data, out, save_every=2, keep_checkpoints=2))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-6", "step-8"]
    result = train(tiny_model_dir, config(tiny_data, out, resume=str(out / "checkpoints" / "step-6")))
    assert result.steps == 10


def test_resume_without_a_checkpoint_and_with_overwrite_are_refused(tiny_model_dir, tiny_data, tmp_path):
    with pytest.raises(UsageError, match="no checkpoint to resume from"):
        check_output(config(tiny_data, tmp_path / "empty", resume="auto"))
    with pytest.raises(UsageError, match="not a checkpoint folder"):
        check_output(config(tiny_data, tmp_path / "x", resume=str(tmp_path)))
    with pytest.raises(UsageError, match="resume and overwrite contradict"):  # as_flags(): --resume and --overwrite
        config(tiny_data, tmp_path / "x", resume="auto", overwrite=True)


def test_resume_command_repeats_the_flags_with_resume_auto():
    argv = ["solo", "train", "--data", "my data", "-o", "runs/x", "--overwrite", "--resume", "old"]
    assert resume_command(argv) == "solo train --data 'my data' -o runs/x --resume auto"


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    import solo_cli.training.objective as objective_module  # the sft objective's loss (objective.py)

    real = objective_module.causal_lm_loss
    calls = {"n": 0}

    def poisoned(model, batch, label_smoothing=0.0):
        calls["n"] += 1
        loss, count = real(model, batch, label_smoothing)
        return (loss * float("nan"), count) if calls["n"] >= 5 else (loss, count)

    monkeypatch.setattr(objective_module, "causal_lm_loss", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(RuntimeFailure, match=r"training stopped at step 5: the loss became nan") as info:
        train(tiny_model_dir, config(tiny_data, out, save_every=2, eval_every=100))
    assert "; lower --lr (now 0.01) or add --warmup;" in info.value.as_flags()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-2", "step-4"]
    assert not (out / "adapter.safetensors").exists()


def test_out_of_memory_ends_with_concrete_advice(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    import solo_cli.training.trainer as trainer_module

    def oom(self, batches):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer_module.Trainer, "_step", oom)
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            tiny_model_dir,
            "--data",
            str(tiny_data),
            "-o",
            str(tmp_path / "o"),
            "--max-steps",
            "2",
            "--connections",
            "top:1",
        ],
    )
    assert result.exit_code == 1
    for advice in ("ran out of memory at step 1", "--batch-size", "--grad-accum", "--max-seq-length", "--grad-checkpoint"):
        assert advice in result.output
    assert "Traceback" not in result.output


def test_ctrl_c_on_the_command_line_checkpoints_prints_the_resume_command_and_exits_130(tiny_model_dir, tiny_data, tmp_path):
    import subprocess
    import sys
    import time

    out = tmp_path / "cli-run"
    args = [
        sys.executable,
        "-m",
        "solo_cli",
        "train",
        "--model",
        tiny_model_dir,
        "--data",
        str(tiny_data),
        "-o",
        str(out),
        "--max-steps",
        "100000",
        "--connections",
        "top:1",
        "--eval-every",
        "100000",
        "--device",
        "cpu",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ | {"COLUMNS": "400"})
    deadline = time.time() + 120
    metrics = out / "metrics.jsonl"
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "resume with: solo train --model" in stderr and "--resume auto" in stderr
    step = int(stderr.split("interrupted at step ")[1].split(" ")[0])
    assert (out / "checkpoints" / f"step-{step}" / "trainer_state.json").is_file()


def test_float16_trains_with_a_grad_scaler_and_resumes_it_exactly(tiny_model_dir, tiny_data, tmp_path):
    """float16 activations need loss scaling; its state is part of the checkpoint (JSON, no pickle)."""
    whole = train(tiny_model_dir, config(tiny_data, tmp_path / "whole", dtype="float16"))
    out = tmp_path / "split"
    with pytest.raises(Interrupted):
        train(tiny_model_dir, config(tiny_data, out, dtype="float16"), signal_at(4, signal.SIGINT))
    state = json.loads((out / "checkpoints" / "step-4" / "trainer_state.json").read_text())
    assert state["grad_scaler"]["scale"] > 1.0  # loss scaling was on
    resumed = train(tiny_model_dir, config(tiny_data, out, dtype="float16", resume="auto"))
    a, _ = load_adapter(whole.adapter_path)
    b, _ = load_adapter(resumed.adapter_path)
    for key, value in a.state_dict().items():
        assert torch.isfinite(value).all()
        torch.testing.assert_close(b.state_dict()[key], value, rtol=1e-5, atol=1e-7)


def test_checkpoint_rng_covers_every_cuda_device(monkeypatch):
    """A resumed CUDA run draws the same dropout masks: the CUDA generators are saved and restored."""
    from solo_cli.training import checkpoint

    devices = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3, 4], dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: devices)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    state = checkpoint.rng_state()
    assert set(state) == {"rng.torch", "rng.cuda.0", "rng.cuda.1"}
    checkpoint.set_rng_state(state)
    assert [t.tolist() for t in restored] == [[1, 2], [3, 4]]


def test_resume_of_a_run_stopped_before_its_first_save_suggests_overwrite(tmp_path):
    """Suggesting "train without --resume" there led to "already holds a run; pass --overwrite"."""
    from solo_cli.training.checkpoint import find_checkpoint

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UsageError, match="no checkpoint to resume from yet") as info:
        find_checkpoint(tmp_path, "auto")
    assert info.value.as_flags().endswith("with the same command and --overwrite instead of --resume auto")


def test_resume_compares_what_dtype_auto_resolves_to():
    """A run recorded before --dtype auto (dtype float32) resumes under the new default where auto
    means float32, and is refused, naming both, where auto would switch it to bfloat16."""
    import dataclasses

    from solo_cli.training import resume
    from solo_cli.training.config import TrainConfig

    recorded = dataclasses.asdict(TrainConfig(data="rows.jsonl", dtype="float32"))
    cfg = TrainConfig(data="rows.jsonl")  # dtype auto, the default
    for resolved, expected in (("float32", []), ("bfloat16", ["--dtype float32 -> bfloat16"])):
        found = [resume.UsageError(d).as_flags() for d in resume._setting_differences(cfg, recorded, resolved)]
        assert found == expected
