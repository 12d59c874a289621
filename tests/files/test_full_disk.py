"""A full disk during train and merge: one line, exit 1, no temporary file, the old outputs kept."""

import pytest
from support import assert_one_line, info_for, make_adapter, perturb, run
from tiny import make_model

from solo_cli import save_adapter


@pytest.fixture
def full_disk(monkeypatch):
    """safetensors' writer fails with ENOSPC, as on a full disk (adapters, checkpoints, merges)."""

    def save_file(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("solo_cli.engine.adapter_file.save_file", save_file)


def test_full_disk_during_train_is_one_line_and_leaves_no_temporary_file(tiny_model_dir, tiny_data, tmp_path, full_disk):
    out = tmp_path / "run"
    code, lines = run(
        "train",
        "--model",
        tiny_model_dir,
        "--data",
        tiny_data,
        "-o",
        out,
        "--max-steps",
        2,
        "--no-chat-template",
        "--batch-size",
        4,
    )
    assert code == 1
    assert_one_line(lines, "no space left on device")
    leftovers = [p.name for p in out.rglob("*") if p.name.startswith(".") and p.name != ".solo.lock"]
    assert leftovers == [] and not (out / "adapter.safetensors").exists()


def test_full_disk_during_merge_keeps_the_old_output(tmp_path, full_disk, monkeypatch):
    model = make_model("llama")
    adapter = perturb(make_adapter(model, "zero-init", plan=[(0, 3)]))
    monkeypatch.undo()  # write the inputs on a disk that still has room
    a = save_adapter(tmp_path / "a.safetensors", adapter, info_for(model, adapter))
    old = save_adapter(tmp_path / "m.safetensors", adapter, info_for(model, adapter))
    before = old.read_bytes()

    def save_file(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("solo_cli.engine.adapter_file.save_file", save_file)
    code, lines = run("merge", a, a, "-o", old, "--overwrite")
    assert code == 1
    assert_one_line(lines, "no space left on device", "m.safetensors")
    assert old.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "m.safetensors"]


def test_a_real_safetensors_full_disk_while_writing_optimizer_state_is_one_line(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    """safetensors reports a full disk as SafetensorError("... (os error 28)"), not OSError."""
    from safetensors import SafetensorError

    def save_file(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("solo_cli.training.checkpoint.save_file", save_file)
    out = tmp_path / "run"
    code, lines = run(
        "train", "--model", tiny_model_dir, "--data", tiny_data, "-o", out, "--max-steps", 4, "--save-every", 2,
        "--no-chat-template", "--batch-size", 4,
    )  # fmt: skip
    assert code == 1
    assert_one_line(lines, "no space left on device")
    assert not (out / "checkpoints" / "step-2").exists()
