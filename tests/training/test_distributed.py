"""Data parallelism: 2 CPU processes (gloo on loopback) train the same adapter as one process with twice the batch."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import micro_batches, run

from solo_cli import load_adapter

TORCHRUN = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
ENV = os.environ | {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def test_ranks_split_each_global_batch_in_order():
    examples = list(range(10))
    one = micro_batches(examples, 4, seed=3)
    ranks = [micro_batches(examples, 2, seed=3, rank=r, world_size=2) for r in range(2)]
    for _ in range(6):
        assert next(one) == next(ranks[0]) + next(ranks[1])


def test_wrapping_the_adapter_for_data_parallelism_warns_nothing(tiny_model_dir, tmp_path):
    """solo's own DDP call raised torch's FutureWarning (``broadcast_buffers`` is deprecated) on every rank."""
    import warnings

    import torch.distributed as dist
    from support import make_adapter

    from solo_cli.engine.models import load_model
    from solo_cli.training.distributed import DistContext, wrap

    model = load_model(tiny_model_dir).model
    adapter = make_adapter(model, gate="schedule")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ddp = wrap(model, adapter, lambda lm, batch, smoothing: (lm, 0), DistContext(0, 2, 0), torch.device("cpu"))
        assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []
        assert not getattr(ddp, "forward_sync_buffers", getattr(ddp, "broadcast_buffers", True))  # each rank sets its gate
    finally:
        dist.destroy_process_group()


def test_fsdp_over_a_4bit_base_is_refused_in_one_line_before_torch_2_12():
    """FSDP2 before torch 2.12 cannot shard integer weights (measured on 2.7 and 2.11: a traceback from fully_shard)."""
    from solo_cli.errors import UsageError
    from solo_cli.training.sharding import refuse_old_torch_for_4bit

    with pytest.raises(UsageError, match="needs torch 2.12 or newer .* this is torch 2.11.0"):
        refuse_old_torch_for_4bit("--parallel fsdp", "2.11.0+cu130")
    refuse_old_torch_for_4bit("--parallel fsdp", "2.12.0")


def _train_args(model_dir, data, out, batch):
    return [
        "train",
        "--model",
        model_dir,
        "--data",
        str(data),
        "-o",
        str(out),
        "--max-steps",
        "4",
        "--batch-size",
        str(batch),
        "--connections",
        "emb->2,1->3",
        "--rank",
        "4",
        "--lr",
        "1e-2",
        "--device",
        "cpu",
        "--eval-every",
        "2",
        "--warmup",
        "1",
        "--weight-decay",
        "0.01",
    ]


# --packing: the processes split each global micro-batch's rows as they split its examples
@pytest.mark.parametrize("extra", [[], ["--packing", "--max-seq-length", "128"]], ids=["padded", "packing"])
def test_two_processes_equal_one_process_with_twice_the_batch(tiny_model_dir, tiny_data, tmp_path, extra):
    code, lines = run(*_train_args(tiny_model_dir, tiny_data, tmp_path / "one", 4), *extra)  # one process, in this one
    assert code == 0, lines
    multi = subprocess.run(
        [
            TORCHRUN,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "solo_cli",
            *_train_args(tiny_model_dir, tiny_data, tmp_path / "two", 2),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )
    assert multi.returncode == 0, multi.stderr + multi.stdout
    assert multi.stdout.count("trainable params:") == 1  # only rank 0 prints
    a, _ = load_adapter(tmp_path / "one" / "adapter.safetensors")
    b, _ = load_adapter(tmp_path / "two" / "adapter.safetensors")
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=1e-4, atol=1e-6)
    losses = [line for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines() if '"valid_loss"' in line]
    assert len(losses) == 2  # logged once, by rank 0


def test_uneven_last_batches_leave_ranks_empty_but_give_one_process_result(tiny_model_dir, tiny_data, tmp_path):
    """16 rows over 4 ranks x 3 leave the last global batch as [3, 1, 0, 0]: an uneven share and two empty ones.

    Every rank must still step (an empty share contributes a zero gradient) and the adapter must
    equal one process with the whole global batch. collate([]) used to raise on the empty ranks."""
    for ranks, batch in ((4, 3),):
        last_index = -(-16 // (batch * ranks)) - 1
        shares = [
            next(micro_batches(list(range(16)), batch, seed=0, start=last_index, rank=r, world_size=ranks)) for r in range(ranks)
        ]
        assert [] in shares  # the case that used to crash
        code, lines = run(*_train_args(tiny_model_dir, tiny_data, tmp_path / f"one{ranks}", batch * ranks))
        assert code == 0, lines
        multi = subprocess.run(
            [
                TORCHRUN,
                "--standalone",
                "--nproc_per_node",
                str(ranks),
                "-m",
                "solo_cli",
                *_train_args(tiny_model_dir, tiny_data, tmp_path / f"multi{ranks}", batch),
            ],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
        )
        assert multi.returncode == 0, multi.stderr + multi.stdout
        a, _ = load_adapter(tmp_path / f"one{ranks}" / "adapter.safetensors")
        b, _ = load_adapter(tmp_path / f"multi{ranks}" / "adapter.safetensors")
        for key, value in a.state_dict().items():
            torch.testing.assert_close(b.state_dict()[key], value, rtol=1e-4, atol=1e-6)


def test_fewer_rows_than_one_global_batch_are_refused(tiny_model_dir, tiny_data, monkeypatch):
    """The check counts the global batch (--batch-size x processes), not one process's share."""
    import pytest

    from solo_cli.errors import UsageError
    from solo_cli.training.config import TrainConfig
    from solo_cli.training.distributed import DistContext
    from solo_cli.training.run import prepare

    monkeypatch.setattr("solo_cli.training.run.distributed.init", lambda ctx, device: None)  # stand for a 4-process launch
    cfg = TrainConfig(model=tiny_model_dir, data=str(tiny_data), batch_size=5, device="cpu", chat_template=False)
    with pytest.raises(UsageError, match=r"16 usable examples, fewer than one batch") as info:
        prepare(cfg, ctx=DistContext(0, 4, 0))
    assert "(--batch-size 5 x 4 processes); add rows or lower --batch-size" in info.value.as_flags()


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    """``solo`` over 2 processes on loopback, to completion."""
    return subprocess.run(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "solo_cli", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
    )


def _descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for child in Path("/proc").iterdir():
            if child.name.isdigit():
                try:
                    ppid = int((child / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == parent:
                    found.append(int(child.name))
                    frontier.append(int(child.name))
    return found


def _rank_of(pid: int) -> int | None:
    try:
        env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [e.split(b"=", 1)[1] for e in env if e.startswith(b"RANK=")]
    return int(ranks[0]) if ranks else None


def test_a_rank_that_dies_brings_the_run_down_instead_of_hanging(tiny_model_dir, tiny_data, tmp_path):
    import signal
    import time

    out = tmp_path / "dies"
    args = _train_args(tiny_model_dir, tiny_data, out, 2)
    args[args.index("--max-steps") + 1] = "100000"
    args[args.index("--eval-every") + 1] = "100000"
    proc = subprocess.Popen(
        [TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "solo_cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.3)
    victim = next(pid for pid in _descendants(proc.pid) if _rank_of(pid) == 1)
    os.kill(victim, signal.SIGKILL)
    started = time.time()
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode != 0
    assert time.time() - started < 200
    assert "solo_cli" in stderr or "rank" in stderr.lower()


def test_a_two_process_run_resumes_under_fsdp_and_is_refused_on_one_process(tiny_model_dir, tiny_data, tmp_path):
    """World size was not recorded: resuming on 1 process trained another run (loss 10.6222 instead of 10.6783).

    The adapter is replicated under ddp and fsdp alike, with the same arithmetic: a ddp run (here with
    --grad-checkpoint) resumed under --parallel fsdp ends with the adapter the ddp run ended with."""
    import json

    out = tmp_path / "two"
    args = [*_train_args(tiny_model_dir, tiny_data, out, 2), "--save-every", "2", "--grad-checkpoint"]
    multi = _torchrun(args)
    assert multi.returncode == 0, multi.stderr + multi.stdout
    shape = json.loads((out / "config.json").read_text())["run_shape"]
    assert (shape["world_size"], shape["global_batch"]) == (2, 4)
    checkpoint = out / "checkpoints" / "step-2"
    resumed = [*_train_args(tiny_model_dir, tiny_data, tmp_path / "fsdp", 2), "--resume", str(checkpoint), "--parallel", "fsdp"]
    fsdp = _torchrun(resumed)
    assert fsdp.returncode == 0, fsdp.stderr + fsdp.stdout
    a, _ = load_adapter(out / "adapter.safetensors")
    b, _ = load_adapter(tmp_path / "fsdp" / "adapter.safetensors")
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=1e-5, atol=1e-7)
    again = [*_train_args(tiny_model_dir, tiny_data, tmp_path / "one", 2), "--resume", str(checkpoint)]
    code, lines = run(*again)
    assert code == 2, lines
    assert "Traceback" not in "\n".join(lines)
    assert "processes 2 -> 1, global batch 4 -> 2" in " ".join(" ".join(lines).split())
