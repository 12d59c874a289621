"""bf16 and the exactness the README promises (issue 28, item 13), on every CPU kind: what holds in bf16 is tested,
what cannot hold (the base's bf16 rounding depends on the shapes it computes on) is said at the start of the run."""

import signal

import pytest
import torch
from support import run
from test_resume import config, signal_at, train

from solo_cli import load_adapter
from solo_cli.training.trainer import Interrupted


def test_a_bf16_run_resumes_exactly_as_a_float32_run_does(tiny_model_dir, tiny_data, tmp_path):
    """The adapter, its gradients and optimizer state are float32 and the bf16 kernels are deterministic: an
    interrupted and resumed bf16 run ends where the uninterrupted one ends."""
    short = {"dtype": "bfloat16", "max_steps": 5, "eval_every": 2, "save_every": 2}  # bf16 is slow on CPUs without it
    whole = train(tiny_model_dir, config(tiny_data, tmp_path / "whole", **short))
    out = tmp_path / "split"
    with pytest.raises(Interrupted):
        train(tiny_model_dir, config(tiny_data, out, **short), signal_at(3, signal.SIGINT))
    resumed = train(tiny_model_dir, config(tiny_data, out, resume="auto", **short))
    a, _ = load_adapter(whole.adapter_path)
    b, _ = load_adapter(resumed.adapter_path)
    for key, value in a.state_dict().items():
        assert value.dtype == torch.float32, key
        torch.testing.assert_close(b.state_dict()[key], value, rtol=1e-5, atol=1e-7)
    assert resumed.best_valid_loss == pytest.approx(whole.best_valid_loss, rel=1e-5)


def _train(model_dir, data, out, dtype):
    return run(
        "train", "--model", model_dir, "--data", data, "-o", out, "--dtype", dtype,
        "--max-steps", "1", "--connections", "emb->2", "--rank", "2", "--eval-every", "1",
    )  # fmt: skip


def test_a_bf16_run_says_at_its_start_which_guarantees_it_gives_up(tiny_model_dir, tiny_data, tmp_path):
    code, lines = _train(tiny_model_dir, tiny_data, tmp_path / "bf16", "bfloat16")
    assert code == 0, lines
    notes = [line for line in lines if line.startswith("note: exactness in bfloat16")]
    assert len(notes) == 1, lines
    for promise in ("--resume repeats the run", "N processes and 1", "greedy text", "--dtype float32 keeps both"):
        assert promise in notes[0]
    code, lines = _train(tiny_model_dir, tiny_data, tmp_path / "fp32", "float32")
    assert code == 0 and not any("exactness" in line for line in lines), lines  # float32 keeps every guarantee
