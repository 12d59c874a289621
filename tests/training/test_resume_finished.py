"""`--resume auto` of a finished run changes nothing; a resumed run's time counts the whole run."""

import json
import signal

import pytest
from support import run
from test_resume import config, signal_at, train

from solo_cli import read_info
from solo_cli.training.trainer import Interrupted


def snapshot(folder):
    """Every file under ``folder``: its bytes and its modification time."""
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("steps", [1, 3])  # 1: a run too short for any checkpoint
def test_resume_auto_of_a_finished_run_says_so_and_touches_nothing(tiny_model_dir, tiny_data, tmp_path, steps):
    out = tmp_path / "run"
    command = ["train", "--model", tiny_model_dir, "--data", tiny_data, "-o", out, "--max-steps", steps, "--save-every", 1]
    command += ["--no-chat-template", "--batch-size", 4]
    code, lines = run(*command)
    assert code == 0, lines
    before = snapshot(out)
    code, lines = run(*command, "--resume", "auto")
    assert code == 0, lines
    assert lines == [
        f"{out}: the run is complete ({steps} of {steps} steps, adapter {out / 'adapter.safetensors'}); nothing to resume "
        "and nothing was changed (to train it again, pass --overwrite instead of --resume auto)"
    ]
    assert snapshot(out) == before
    code, lines = run(*command, "--resume", "auto", "--lr", "0.5")  # not the run's settings: refused as any resume
    assert code == 2 and "--lr 0.02 -> 0.5" in lines[-1], lines
    assert snapshot(out) == before


def test_a_resumed_run_counts_the_time_of_the_whole_run(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "split"
    with pytest.raises(Interrupted):
        train(tiny_model_dir, config(tiny_data, out), signal_at(4, signal.SIGINT))
    trained = json.loads((out / "checkpoints" / "step-4" / "trainer_state.json").read_text())["elapsed"]
    assert trained > 0
    result = train(tiny_model_dir, config(tiny_data, out, resume="auto"))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    elapsed = [r["elapsed"] for r in records if "elapsed" in r]
    assert [r["step"] for r in records if "elapsed" in r] == list(range(1, 11))
    assert elapsed == sorted(elapsed) and elapsed[4] >= trained  # step 5 continues from step 4's time
    assert result.seconds >= elapsed[-1]
    assert read_info(result.adapter_path).training["seconds"] >= round(trained, 2)
