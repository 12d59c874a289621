"""`solo inspect --model` with the training memory (issue 20), and `solo train` refusing a run that cannot fit."""

import json
from pathlib import Path

import pytest
from support import assert_one_line, info_for, make_adapter, run, write_jsonl
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
    assert mem["activations_method"] == {"solo": "traced", "lora": "traced", "lora_qv": "traced"}
    assert mem["load"] == expected.parts["weights"]
    assert mem["settings"] == {
        "quantize": "none",
        "dtype": "float32",
        "autocast": None,
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


def config_only(folder: Path, model_type: str, quantization_config: dict | None = None, **sizes) -> Path:
    """A model folder holding only config.json: the estimate builds the model on fake tensors, reading no weights."""
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type, **sizes)
    if quantization_config is not None:
        config.quantization_config = quantization_config
    config.save_pretrained(folder)
    return folder


LLAMA_128 = {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "vocab_size": 320}
BNB_NF4 = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}


def test_a_model_that_came_quantized_is_costed_from_its_own_quantization_config(tmp_path):
    full = memory_json(config_only(tmp_path / "full", "llama", **LLAMA_128))
    folder = config_only(tmp_path / "nf4", "llama", BNB_NF4, **LLAMA_128)
    came = memory_json(folder)
    assert came["settings"]["quantize"] == "nf4"
    nf4 = memory_json(tmp_path / "full", "--quantize", "nf4")
    assert came["parts"]["solo"]["weights"] == nf4["parts"]["solo"]["weights"] < full["parts"]["solo"]["weights"]
    code, lines = run("inspect", "--model", folder, *SMALL, "--quantize", "nf4")
    assert code == 2
    assert_one_line(lines, "--quantize nf4: the model is already quantized (nf4)", "drop --quantize")


def test_train_never_advises_quantize_for_a_model_that_came_quantized(monkeypatch, tmp_path):
    """The fit check costs the base as its config stores it, and its refusal leaves out --quantize nf4 (which the run
    would refuse: the model is quantized already)."""
    import solo_cli.training.fits as fits
    import solo_cli.training.prepared as prepared

    folder = config_only(tmp_path / "nf4", "llama", BNB_NF4, **LLAMA_128)
    monkeypatch.setattr(fits, "free_bytes", lambda device: 1000)
    monkeypatch.setattr(prepared, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    data = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a", "completion": " b"}] * 4)
    code, lines = run("train", "--model", folder, "--data", data, "-o", tmp_path / "run", "--device", "cpu", "--max-steps", "1")
    assert code == 2
    error = assert_one_line(lines, "this run needs about", "--batch-size (now 8)", "--grad-checkpoint")
    assert "--quantize" not in error


def test_a_rough_estimate_says_so_in_the_table_and_the_json(tmp_path, capfd):
    """A float32 Mixtral cannot be traced on fake tensors: its activations are a rough count, marked as one, and
    torch's traceback of the failed trace stays off stderr."""
    sizes = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "vocab_size": 320}
    folder = config_only(tmp_path / "moe", "mixtral", num_local_experts=4, num_experts_per_tok=2, **sizes)
    mem = memory_json(folder)
    assert mem["activations_method"] == {"solo": "rough", "lora": "rough", "lora_qv": "rough"}
    assert mem["parts"]["solo"]["activations"] < mem["parts"]["lora"]["activations"]
    code, lines = run("inspect", "--model", folder, "--connections", "0->3", *SMALL)
    assert code == 0, lines
    assert any("activations kept" in line and "(rough)" in line for line in lines), lines
    assert "Traceback" not in capfd.readouterr().err


def test_the_fit_check_counts_loading_the_whole_base_and_the_cuda_allocator():
    """Every FSDP process loads the whole base before sharding it: on a CPU that is the peak when it is over
    training's; on CUDA an unquantized base passes through CPU memory (one per process) and only the shards reach the
    GPU, while a 4-bit one is quantized on the GPU, whole. CUDA's needs carry the allocator's margin."""
    import torch

    from solo_cli.engine.memory_estimate import MemoryEstimate
    from solo_cli.training.config import TrainConfig
    from solo_cli.training.fits import CUDA_RESERVE_FACTOR, CUDA_WORKSPACE, needs

    sharded = MemoryEstimate(total=300, load=1000)
    fsdp, ddp = TrainConfig(parallel="fsdp"), TrainConfig()
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert needs(sharded, fsdp, cpu, processes=2) == (2000, 0)
    assert needs(sharded, fsdp, cuda, processes=2) == (int(300 * CUDA_RESERVE_FACTOR) + CUDA_WORKSPACE, 2000)
    nf4 = MemoryEstimate(total=300, load=1000, quantize="nf4")
    assert needs(nf4, TrainConfig(parallel="fsdp", quantize="nf4"), cuda, processes=2) == (
        int(1000 * CUDA_RESERVE_FACTOR) + CUDA_WORKSPACE,
        0,
    )
    whole = MemoryEstimate(total=1500, load=1000)
    assert needs(whole, ddp, cuda) == (int(1500 * CUDA_RESERVE_FACTOR) + CUDA_WORKSPACE, 1000)  # loaded, then moved
    assert needs(whole, ddp, cpu, processes=3) == (4500, 0)


def test_an_fsdp_run_whose_processes_cannot_load_the_base_is_refused(monkeypatch, tmp_path):
    """Two FSDP processes on this CPU: free memory enough for both training peaks but not for two whole bases."""
    import torch

    import solo_cli.training.fits as fits
    from solo_cli.engine.precision import Precision
    from solo_cli.errors import UsageError
    from solo_cli.training.config import TrainConfig
    from solo_cli.training.distributed import DistContext

    sizes = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 320}
    folder = config_only(tmp_path / "deep", "llama", num_hidden_layers=16, **sizes)
    cfg = TrainConfig(model=str(folder), parallel="fsdp", batch_size=1, max_seq_length=2, connections="14->15")
    precision, two = Precision("float32", "float32: as asked"), DistContext(0, 2, 0)
    estimate = fits._estimate(cfg, load_config(str(folder)), precision, two)
    assert estimate.load > estimate.total  # a process's shard and gathered blocks are under the whole base
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(fits, "free_bytes", lambda device: 2 * estimate.total + 1)
    with pytest.raises(UsageError, match="this run needs about"):
        fits.check_fits(cfg, precision, torch.device("cpu"), two)
    monkeypatch.setattr(fits, "free_bytes", lambda device: 2 * estimate.load)
    fits.check_fits(cfg, precision, torch.device("cpu"), two)
