"""--lr-b-ratio: B's learning rate is lr x ratio, as LoRA+ trains LoRA's B (solo_cli/training/optim.py)."""

import dataclasses
import json
import os
import signal

import pytest
import torch
from support import make_adapter
from tiny import make_model

from solo_cli import load_adapter
from solo_cli.engine.models import load_model
from solo_cli.errors import UsageError
from solo_cli.training import resume
from solo_cli.training.config import TrainConfig
from solo_cli.training.optim import make_optimizer, param_groups
from solo_cli.training.run import check_output, execute, prepare
from solo_cli.training.trainer import Interrupted


def adapter(gate="schedule"):
    return make_adapter(make_model("llama"), gate=gate)


def b_params(a):
    return {id(c.B) for c in a.connections.values()}


def test_ratio_1_keeps_one_group_at_lr():
    a = adapter()
    (group,) = param_groups(a, TrainConfig(lr=3e-3))
    assert group["lr"] == 3e-3 and len(group["params"]) == len(list(a.parameters()))


@pytest.mark.parametrize("gate", ["schedule", "zero-init"])
def test_b_trains_at_ratio_times_lr_and_a_at_lr(gate):
    a = adapter(gate)
    optimizer, scheduler = make_optimizer(a, TrainConfig(lr=2e-2, lr_b_ratio=16.0), steps=10)
    rest, b = optimizer.param_groups
    assert {id(p) for p in b["params"]} == b_params(a)
    assert {id(p) for p in rest["params"]} == {id(c.A) for c in a.connections.values()}
    assert b["lr"] == pytest.approx(16 * 2e-2) and rest["lr"] == pytest.approx(2e-2)
    for _ in range(4):  # the linear decay scales both groups alike: B stays 16 x A
        optimizer.step()
        scheduler.step()
    lrs = scheduler.get_last_lr()
    assert lrs[1] == pytest.approx(16 * lrs[0]) and lrs[0] == pytest.approx(2e-2 * 6 / 10)


def test_the_first_step_moves_b_ratio_times_further_than_a():
    """AdamW's first step moves every parameter with a gradient by lr (m / sqrt(v) = +-1): B by 4 x A's lr."""
    a = adapter("schedule")
    optimizer, _ = make_optimizer(a, TrainConfig(lr=1e-3, lr_b_ratio=4.0), steps=10)
    before = {name: p.detach().clone() for name, p in a.named_parameters()}
    for p in a.parameters():
        p.grad = torch.full_like(p, 0.5)
    optimizer.step()
    for name, p in a.named_parameters():
        lr = 4e-3 if name.endswith(".B") else 1e-3
        torch.testing.assert_close((p.detach() - before[name]).abs(), torch.full_like(p, lr), rtol=1e-4, atol=0)


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("inf")])
def test_a_ratio_that_is_not_positive_is_refused_naming_the_flag(value):
    with pytest.raises(UsageError) as info:
        TrainConfig(lr_b_ratio=value).validate()
    assert info.value.as_flags().startswith("--lr-b-ratio ") and "must be a positive number" in info.value.as_flags()


def test_resume_refuses_another_ratio():
    """lr_b_ratio is not in RESUME_MAY_CHANGE: it changes the arithmetic of the run."""
    assert "lr_b_ratio" not in resume.RESUME_MAY_CHANGE and "homotopy_fraction" not in resume.RESUME_MAY_CHANGE
    recorded = dataclasses.asdict(TrainConfig(data="rows.jsonl", dtype="float32"))
    cfg = TrainConfig(data="rows.jsonl", dtype="float32", lr_b_ratio=4.0)
    found = [UsageError(d).as_flags() for d in resume._setting_differences(cfg, recorded)]
    assert found == ["--lr-b-ratio 1.0 -> 4.0"]
    cfg = TrainConfig(data="rows.jsonl", dtype="float32", homotopy_fraction=0.3)
    assert [UsageError(d).as_flags() for d in resume._setting_differences(cfg, recorded)] == ["--homotopy-fraction unset -> 0.3"]


def _config(data, out, **kw):
    values = dict(
        data=str(data),
        output=str(out),
        connections="emb->2,1->3",
        rank=4,
        gate="zero-init",
        lr=1e-2,
        lr_b_ratio=4.0,
        max_steps=8,
        batch_size=4,
        eval_every=3,
        save_every=3,
        seed=0,
        chat_template=False,
        device="cpu",
    )
    return TrainConfig(**(values | kw)).validate()


def _train(model_dir, cfg, callback=None):
    run = prepare(cfg, load_model(model_dir))
    check_output(cfg)
    return execute(run, callback)


def test_a_run_with_two_groups_resumes_exactly(tiny_model_dir, tiny_data, tmp_path):
    """The checkpoint keeps both groups' lrs and moments: interrupted and resumed equals uninterrupted."""
    whole = _train(tiny_model_dir, _config(tiny_data, tmp_path / "whole"))

    def stop_at_4(event, info):
        if event == "step" and info["step"] == 4:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        _train(tiny_model_dir, _config(tiny_data, tmp_path / "split"), stop_at_4)
    resumed = _train(tiny_model_dir, _config(tiny_data, tmp_path / "split", resume="auto"))
    a, _ = load_adapter(whole.adapter_path)
    b, _ = load_adapter(resumed.adapter_path)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=1e-5, atol=1e-7)
    assert json.loads((tmp_path / "split" / "config.json").read_text())["lr_b_ratio"] == 4.0
