"""``--parallel fsdp``: the base sharded block by block over 2 CPU processes (gloo), the adapter replicated.

Run as a script under torchrun, this file is also the worker of the shard-size and 4-bit tests.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
ENV = os.environ | {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
HERE = Path(__file__).resolve()


def _rows(n: int) -> list[dict]:
    return [{"prompt": f"name[Place {i}] ->", "completion": f" Place {i} is a cheap pub."} for i in range(n)]


@pytest.fixture
def uneven_data(tmp_path):
    """14 training rows: a global batch of 3 x 2 leaves the last one [2, 0]; 7 validation rows leave [1, 0]."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name, rows in (("train.jsonl", _rows(14)), ("valid.jsonl", _rows(7))):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def _args(model_dir, data, out, batch) -> list[str]:
    return [
        *("train", "--model", model_dir, "--data", str(data), "-o", str(out), "--max-steps", "4"),
        *("--batch-size", str(batch), "--connections", "emb->2,1->3", "--rank", "4", "--lr", "1e-2", "--device", "cpu"),
        *("--eval-every", "2", "--warmup", "1", "--weight-decay", "0.01"),
    ]


def _launch(args: list[str], processes: int | None) -> subprocess.CompletedProcess:
    head = [TORCHRUN, "--standalone", "--nproc_per_node", str(processes)] if processes else [sys.executable]
    result = subprocess.run([*head, "-m", "solo_cli", *args], capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout
    return result


def _valid_losses(out: Path) -> list[float]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["valid_loss"] for line in lines if '"valid_loss"' in line]


def test_fsdp_over_two_processes_trains_the_one_process_adapter(tiny_model_dir, uneven_data, tmp_path):
    """Step 3's global batch leaves rank 1 no examples, and validation's second batch too: FSDP needs every rank to
    run the same forwards (a stand-in, counted 0), and the adapter must still be one process's with the whole batch.
    --grad-checkpoint recomputes the sharded blocks in the backward pass."""
    from solo_cli import load_adapter

    _launch(_args(tiny_model_dir, uneven_data, tmp_path / "one", 6), None)
    fsdp = [*_args(tiny_model_dir, uneven_data, tmp_path / "fsdp", 3), "--parallel", "fsdp", "--grad-checkpoint"]
    multi = _launch(fsdp, 2)
    assert multi.stdout.count("trainable params:") == 1  # only rank 0 reports
    a, _ = load_adapter(tmp_path / "one" / "adapter.safetensors")
    b, _ = load_adapter(tmp_path / "fsdp" / "adapter.safetensors")
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=1e-4, atol=1e-6)
    one, two = _valid_losses(tmp_path / "one"), _valid_losses(tmp_path / "fsdp")
    assert len(two) == 2  # logged once, by rank 0
    assert two == pytest.approx(one, rel=1e-5)
    config = json.loads((tmp_path / "fsdp" / "config.json").read_text())
    assert (config["parallel"], config["run_shape"]["world_size"]) == ("fsdp", 2)


def test_each_process_holds_half_the_base_and_a_4bit_base_trains_the_one_process_gradients(tmp_path):
    """The issue's target is base memory per process <= 0.55x one process's: measured here as the bytes of each
    process's local shards. Over an nf4 base the adapter's gradients equal one process's over the whole batch."""
    launched = subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", str(HERE), str(tmp_path)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    for rank in range(2):
        found = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert found["blocks_local"] == found["blocks_whole"] // 2  # 1/N of every block's weights
        assert found["base_local"] <= 0.55 * found["base_whole"]
        assert found["nf4_kinds"] == ["Parameter", "Params4bit"]
        assert found["nf4_grad_error"] < 1e-5, found


def test_fsdp_refusals_are_one_line_before_loading(tiny_model_dir, tiny_data, tmp_path):
    from support import assert_one_line, run

    from solo_cli.errors import UsageError
    from solo_cli.training.config import TrainConfig
    from solo_cli.training.distributed import DistContext
    from solo_cli.training.sharding import check_sharding

    with pytest.raises(UsageError, match="needs parallel fsdp"):
        TrainConfig(fsdp_offload=True).validate()
    for quantize in ("int8", "torchao-int8"):
        with pytest.raises(UsageError, match=f"FSDP cannot shard {quantize} weights"):
            TrainConfig(parallel="fsdp", quantize=quantize).validate()
    two = DistContext(0, 2, 0)
    with pytest.raises(UsageError, match="this run is on cpu"):
        check_sharding("fsdp", True, "none", two, torch.device("cpu"))
    check_sharding("fsdp", False, "nf4", two, torch.device("cpu"))  # 4-bit shards
    check_sharding("ddp", True, "none", DistContext(), torch.device("cpu"))  # not fsdp: nothing to check here
    code, lines = run(*_args(tiny_model_dir, tiny_data, tmp_path / "o", 2), "--fsdp-offload")
    assert code == 2
    assert_one_line(lines, "--fsdp-offload offloads the sharded base: it needs --parallel fsdp")
    code, lines = run(*_args(tiny_model_dir, tiny_data, tmp_path / "o", 2), "--parallel", "fsdp")
    assert code == 2
    assert_one_line(lines, "--parallel fsdp shards the base across processes", "torchrun --nproc_per_node N")
    assert not (tmp_path / "o" / "config.json").exists()


def test_a_base_fsdp_cannot_shard_is_refused_by_its_weights_type():
    from torch import nn

    from solo_cli.errors import UsageError
    from solo_cli.training.sharding import check_shardable

    class Int8Params(nn.Parameter):  # stands for bitsandbytes' 8-bit weights, which lose CB and SCB when sharded
        pass

    model = nn.Sequential(nn.Linear(4, 4))
    check_shardable(model)
    model[0].weight = Int8Params(torch.zeros(4, 4), requires_grad=False)
    with pytest.raises(UsageError, match=r"Int8Params weights cannot be sharded by FSDP; use an unquantized base"):
        check_shardable(model)


def test_a_base_keeping_its_weights_in_integer_buffers_is_refused():
    """GPTQ, AWQ and compressed-tensors keep a layer's weight as packed integers (qweight, ...), which FSDP leaves whole
    on every process: refused, naming them, before anything is written."""
    from torch import nn

    from solo_cli.errors import UsageError
    from solo_cli.training.sharding import check_shardable

    class QuantLinear(nn.Module):  # stands for gptqmodel's / AWQ's layer: int32 buffers, no weight parameter
        def __init__(self):
            super().__init__()
            self.register_buffer("qweight", torch.zeros(8, 64, dtype=torch.int32))
            self.register_buffer("scales", torch.zeros(1, 64, dtype=torch.float16))

    blocks = nn.ModuleList([nn.Sequential(nn.LayerNorm(4), QuantLinear()) for _ in range(2)])
    model = nn.Module()
    model.layers = blocks
    with pytest.raises(UsageError, match=r"the base's qweight \(int32\) weights cannot be sharded by FSDP"):
        check_shardable(model)
    del blocks[0][1].qweight, blocks[1][1].qweight
    check_shardable(model)  # floating-point buffers (rotary frequencies, scales) are no weights FSDP must shard


def _model64(folder: Path) -> Path:
    """A tiny Llama 64 wide (bitsandbytes packs 4-bit weights in blocks of 64), saved with the tiny tokenizer."""
    sys.path.insert(0, str(HERE.parents[1]))
    from tiny import make_tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "llama", num_hidden_layers=4, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128
    )
    config.vocab_size = 320
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def _as_on_avx512bf16() -> None:
    """bitsandbytes as on a CPU with AVX512-BF16 (AMX machines), on any CPU: a Linear4bit built from now on repacks its
    weight for a bfloat16 CPU kernel in its first eval-mode forward without grad, which FSDP then cannot shard."""
    import bitsandbytes.nn.modules as bnb_modules

    bnb_modules.has_avx512bf16 = lambda: True


def test_an_nf4_base_shards_after_a_validation_forward_on_every_cpu(monkeypatch, tmp_path):
    """In one process (a group of one): an eval-mode forward without grad before shard_base, as a run's first
    validation, leaves the 4-bit weights as they were, so the sharded base gives the same logits."""
    import bitsandbytes.nn.modules as bnb_modules
    import torch.distributed as dist

    from solo_cli.engine.models import load_model
    from solo_cli.training.sharding import shard_base

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)
    model = load_model(str(_model64(tmp_path / "model64")), quantize="nf4").model
    ids = torch.randint(0, 320, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = model(ids).logits
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        root = shard_base(model, torch.device("cpu"))
        with torch.no_grad():
            sharded = root(lambda lm, x: lm(x).logits, ids)
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(sharded, whole, rtol=0, atol=0)


def test_validation_gives_every_process_the_same_batches():
    from solo_cli.training.distributed import DistContext
    from solo_cli.training.sharded_validation import even_batches

    examples = list(range(7))
    shares = [even_batches(examples, 3, DistContext(r, 2, r)) for r in range(2)]
    assert shares == [[[0, 1, 2], [6]], [[3, 4, 5], []]]
    assert sorted(x for share in shares for batch in share for x in batch) == examples


def _nf4_gradients(folder: Path, rank: int, world: int) -> dict:
    """The adapter's gradients over an nf4 base: one process on the whole batch, then each process on its half, sharded."""
    from solo_cli.engine.adapter import AdapterConfig, SoloAdapter, attach, release_sources
    from solo_cli.engine.loss import causal_lm_loss
    from solo_cli.engine.models import load_model
    from solo_cli.training.distributed import DistContext, wrap
    from solo_cli.training.sharding import shard_base

    loaded = load_model(str(folder), quantize="nf4")
    kinds = sorted({type(p).__name__ for p in loaded.model.parameters()})
    torch.manual_seed(1)
    adapter = SoloAdapter(AdapterConfig([(-1, 2), (1, 3)], 4, "zero-init", 1, 64, source_norm="rms"))
    for p in adapter.parameters():
        torch.nn.init.normal_(p, std=0.1)
    ids = torch.randint(0, 300, (4, 12), generator=torch.Generator().manual_seed(5))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    handle = attach(loaded.model, adapter)
    causal_lm_loss(loaded.model, batch)[0].backward()
    release_sources(loaded.model)
    whole = {k: p.grad.clone() for k, p in adapter.named_parameters()}
    adapter.zero_grad(set_to_none=True)
    handle.detach()
    root = shard_base(loaded.model, torch.device("cpu"))
    loss = wrap(loaded.model, adapter, causal_lm_loss, DistContext(rank, world, rank), torch.device("cpu"), root)
    handle = attach(loaded.model, adapter)
    half = {k: v[rank * 2 : rank * 2 + 2] for k, v in batch.items()}
    loss(half, 0.0)[0].backward()  # equal halves of equal rows: the mean of the halves' means is the whole's
    error = max(float((p.grad - whole[k]).abs().max()) for k, p in adapter.named_parameters())
    return {"nf4_grad_error": error, "nf4_kinds": kinds}


def local_bytes(module: torch.nn.Module) -> int:
    """Bytes of ``module``'s parameters this process holds: its shard of a sharded weight, all of a plain one."""
    total = 0
    for p in module.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        total += local.numel() * local.element_size()
    return total


def _worker(out: Path) -> None:
    """Under torchrun: shard a tiny base and an nf4 one, and write what this process holds to ``out/rank{R}.json``."""
    import torch.distributed as dist

    sys.path.insert(0, str(HERE.parents[1]))
    from tiny import make_model

    from solo_cli.engine.blocks import find_blocks
    from solo_cli.training.sharding import shard_base

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = make_model("llama").requires_grad_(False)
    _, blocks = find_blocks(model)
    found = {"blocks_whole": local_bytes(blocks), "base_whole": local_bytes(model)}
    shard_base(model, torch.device("cpu"))
    found |= {"blocks_local": local_bytes(blocks), "base_local": local_bytes(model)}
    folder = out / "model64"
    if rank == 0:
        _model64(folder)
    dist.barrier()
    _as_on_avx512bf16()  # the nf4 base below repacks in its first forward, as on AMX CPUs, unless solo stops it
    found |= _nf4_gradients(folder, rank, world)
    (out / f"rank{rank}.json").write_text(json.dumps(found))
    dist.destroy_process_group()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
