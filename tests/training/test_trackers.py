"""--report-to: TensorBoard event files hold what metrics.jsonl holds; wandb is called as documented."""

import sys
import types

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from solo_cli.errors import UsageError
from solo_cli.training import trackers


def test_tensorboard_writes_the_scalars_it_is_given(tmp_path):
    tracker = trackers.open_tracker("tensorboard", tmp_path, {"lr": 0.02})
    tracker.log(trackers.tracked_values({"step": 1, "loss": 2.5, "lr": 0.02, "gate": 0.1, "tokens_per_s": 99.0}), 1)
    tracker.log(trackers.tracked_values({"step": 2, "loss": 2.0, "lr": 0.01, "gate": 0.2, "tokens_per_s": 98.0}), 2)
    tracker.log(trackers.tracked_values({"step": 2, "valid_loss": 1.75}), 2)
    tracker.close()
    events = EventAccumulator(str(tmp_path / trackers.TENSORBOARD_DIR))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/loss", "train/lr", "train/gate", "train/tokens_per_s", "eval/loss"}
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 2.5), (2, 2.0)]
    assert [(e.step, e.value) for e in events.Scalars("eval/loss")] == [(2, 1.75)]


def test_none_and_other_processes_report_nothing(tmp_path):
    assert isinstance(trackers.open_tracker("none", tmp_path, {}), trackers.NoTracker)
    assert isinstance(trackers.open_tracker("tensorboard", tmp_path, {}, enabled=False), trackers.NoTracker)
    assert not any(tmp_path.iterdir())


def test_wandb_missing_is_one_line_that_says_what_to_install(monkeypatch):
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError) as info:
        trackers.check_report_to("wandb")
    assert info.value.as_flags() == "--report-to wandb: the wandb package is not installed; pip install wandb"


def test_wandb_gets_the_run_config_and_every_record(tmp_path, monkeypatch):
    calls = []

    class Run:
        def log(self, values, step):
            calls.append(("log", values, step))

        def finish(self):
            calls.append(("finish",))

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: calls.append(("init", kwargs)) or Run()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setenv("WANDB_PROJECT", "e2e")
    tracker = trackers.open_tracker("wandb", tmp_path / "run-7", {"rank": 2})
    tracker.log({"train/loss": 1.5}, 3)
    tracker.close()
    assert calls[0] == ("init", {"project": "e2e", "name": "run-7", "dir": str(tmp_path / "run-7"), "config": {"rank": 2}})
    assert calls[1:] == [("log", {"train/loss": 1.5}, 3), ("finish",)]
