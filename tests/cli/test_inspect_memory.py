"""`solo inspect --model` with the training memory (issue 20), and `solo train` refusing a run that cannot fit."""

import json
from pathlib import Path

import pytest
from conftest import write_jsonl
from support import assert_one_line, info_for, make_adapter, run
from tiny import make_model

from solo_cli import save_adapter
from solo_cli.engine.memory_estimate import train_memory
from solo_cli.engine.models import load_config

SMALL = ["--batch-size", "2", "--max-seq-length", "32", "--dtype", "float32"]


def memory_json(model_dir, *flags):
    code, lines = run("inspect", "--model", model_dir, "--connections", "0->3", "--rank", "2", *SMALL, *flags, "--json")
    assert code == 0, lines
    return json.loads("\n".join(lines))["train_memory"]


def test_the_json_has_solo_beside_lora_in_bytes(tiny_model_dir):
    mem = memory_json(tiny_model_dir)
    config = load_config(tiny_model_dir)
    expected = train_memory(config, connections="0->3", rank=2, batch_size=2, seq_len=32)
    assert mem["solo"] == expected.total
    assert mem["lora"] == train_memory(config, method="lora-all", rank=8, batch_size=2, seq_len=32).total
    assert mem["lora_qv"] == train_memory(config, method="lora-qv", rank=8, batch_size=2, seq_len=32).total
    assert mem["solo"] < mem["lora"]
    assert mem["parts"]["solo"] == expected.parts
    assert mem["settings"] == {
        "quantize": "none",
        "dtype": "float32",
        "batch_size": 2,
        "max_seq_length": 32,
        "world_size": 1,
        "parallel": "ddp",
        "grad_checkpoint": False,
        "lora_rank": 8,
    }


def test_fsdp_and_checkpointing_lower_the_per_process_memory(tiny_model_dir):
    one = memory_json(tiny_model_dir)
    sharded = memory_json(tiny_model_dir, "--world-size", "4", "--parallel", "fsdp")
    assert sharded["solo"] < one["solo"] and sharded["settings"]["parallel"] == "fsdp"
    ckpt = memory_json(tiny_model_dir, "--grad-checkpoint")
    assert ckpt["parts"]["lora"]["activations"] < one["parts"]["lora"]["activations"]


def test_the_table_shows_the_memory_beside_lora(tiny_model_dir):
    code, lines = run("inspect", "--model", tiny_model_dir, "--connections", "0->3", *SMALL)
    assert code == 0, lines
    text = "\n".join(lines)
    assert "training memory (estimate): batch 2 x 32 tokens, float32" in text
    assert "LoRA r=8, all linear" in text and "LoRA r=8 on q,v" in text
    assert "% of LoRA" in text and "GiB" in text


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (["--parallel", "zero"], ["--parallel zero", "ddp, fsdp"]),
        (["--batch-size", "0"], ["--batch-size 0", "at least 1"]),
        (["--max-seq-length", "1"], ["--max-seq-length 1", "at least 2"]),
        (["--dtype", "float8"], ["--dtype float8", "float32"]),
        (["--quantize", "nf3"], ["--quantize nf3", "nf4"]),
    ],
)
def test_bad_memory_flags_are_one_line(tiny_model_dir, flags, needles):
    code, lines = run("inspect", "--model", tiny_model_dir, *flags)
    assert code == 2
    assert_one_line(lines, *needles)


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--batch-size", "4"], "--batch-size is"),
        (["--quantize", "nf4", "--max-seq-length", "64"], "--quantize and --max-seq-length are"),
        (["--grad-checkpoint"], "--grad-checkpoint is"),
        (["--world-size", "2", "--parallel", "fsdp"], "--world-size and --parallel are"),
    ],
)
def test_memory_flags_beside_an_adapter_file_are_refused(tmp_path, flags, named):
    model = make_model("llama")
    adapter = make_adapter(model, "schedule", plan=[(0, 3)])
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(model, adapter))
    code, lines = run("inspect", path, *flags)
    assert code == 2
    assert_one_line(lines, named, "costing a plan")


def test_train_refuses_a_run_that_cannot_fit_before_loading(monkeypatch, tmp_path, tiny_model_dir):
    import solo_cli.training.fits as fits
    import solo_cli.training.prepared as prepared

    monkeypatch.setattr(fits, "free_bytes", lambda device: 1000)
    monkeypatch.setattr(prepared, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    data = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a", "completion": " b"}] * 4)
    out = tmp_path / "run"
    code, lines = run("train", "--model", tiny_model_dir, "--data", data, "-o", out, "--device", "cpu", "--max-steps", "1")
    assert code == 2
    assert_one_line(lines, "this run needs about", "GiB of memory on cpu", "is free", "--quantize nf4", "--batch-size (now 8)")
    assert_one_line(lines, "--max-seq-length (now 256)", "--grad-checkpoint", "--parallel fsdp", "SOLO_MEMORY_CHECK=off")
    assert not out.exists() or not any(Path(out).iterdir())  # nothing written


def test_the_memory_check_can_be_turned_off(monkeypatch, tmp_path, tiny_model_dir):
    import solo_cli.training.fits as fits

    monkeypatch.setattr(fits, "free_bytes", lambda device: 1000)
    monkeypatch.setenv("SOLO_MEMORY_CHECK", "off")
    data = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a", "completion": " b"}] * 4)
    out = tmp_path / "run"
    code, lines = run(
        "train", "--model", tiny_model_dir, "--data", data, "-o", out, "--device", "cpu", "--max-steps", "1", "--batch-size", "2"
    )
    assert code == 0, lines
    assert (out / "adapter.safetensors").is_file()


def test_a_run_that_fits_is_not_refused(tmp_path, tiny_model_dir):
    from solo_cli.training.fits import free_bytes

    assert free_bytes(__import__("torch").device("cpu")) > 0  # MemAvailable is read on this Linux machine
    assert free_bytes(__import__("torch").device("meta")) is None  # elsewhere: not checked
