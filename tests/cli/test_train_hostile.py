"""`solo train` under hostile input (issues 19 and 23): one line naming the flag or file, the right exit code, nothing lost.

Each case was found by a hostile new-user run: `--overwrite` deleted the old run before the new
run's inputs were checked; `--resume` of another run's checkpoint replaced a finished run; `--rank`
above the hidden size trained an adapter solo could not read back (or tried to allocate terabytes);
`--max-seq-length 1` trained on nothing and `--lr 1e6` "succeeded"; a YAML `--config` skipped the
checks the flags get, and an alias bomb or deep nesting in it ran out of memory or recursion; a lock
with an absurd pid, a read-only `tensorboard/` and a full disk ended in tracebacks; a README.md the
user wrote while the run trained was replaced by the model card.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from support import assert_one_line, run, write_jsonl

from solo_cli.errors import UsageError
from solo_cli.files import lock
from solo_cli.training.config import MAX_LR, TrainConfig, build_config
from solo_cli.training.run_folder import RunFolder

ROWS = [{"prompt": f"name[Place {i}] ->", "completion": f" Place {i} is a cheap pub."} for i in range(8)]


def train_args(model, data, out, *extra, **changes):
    flags = {"--max-steps": 3, "--batch-size": 4, "--save-every": 2, "--eval-every": 2, "--device": "cpu"}
    flags |= {f"--{k.replace('_', '-')}": v for k, v in changes.items()}
    return (
        ["train", "--model", model, "--data", data, "-o", out, "--no-chat-template"]
        + [str(x) for kv in flags.items() for x in kv]
        + [str(x) for x in extra]
    )


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``root``, by relative path."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(Path(root).rglob("*"))}


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_model_dir):
    """A finished run (checkpoints/step-2, tensorboard/ events) and its data."""
    root = tmp_path_factory.mktemp("made")
    data = root / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", ROWS)
    write_jsonl(data / "valid.jsonl", ROWS[:4])
    out = root / "run"
    code, lines = run(*train_args(tiny_model_dir, data, out, "--report-to", "tensorboard"))
    assert code == 0, lines
    assert (out / "checkpoints" / "step-2").is_dir() and list((out / "tensorboard").iterdir())
    return SimpleNamespace(root=root, data=data, run=out, model=tiny_model_dir)


def copy_run(made, tmp_path, name="run") -> Path:
    out = tmp_path / name
    shutil.copytree(made.run, out)
    return out


# --overwrite replaces the old run last, after the new run's model and data have loaded.


@pytest.mark.parametrize("bad", ["row", "model"])
def test_overwrite_keeps_the_old_run_when_the_new_inputs_are_bad(made, tmp_path, bad):
    out = copy_run(made, tmp_path)
    before = snapshot(out)
    data, model = made.data, made.model
    if bad == "row":
        data = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], {"prompt": 3, "completion": " c"}])
    else:
        model = tmp_path / "no-such-model"
    code, lines = run(*train_args(model, data, out, "--overwrite"))
    assert code == 2, lines
    assert_one_line(lines, "bad.jsonl:2" if bad == "row" else "--model")
    assert snapshot(out) == before  # the old run is whole, and the lock is gone


def test_a_refused_run_leaves_no_folder_behind(made, tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], {"prompt": 3, "completion": " c"}])
    out = tmp_path / "new" / "run"
    code, lines = run(*train_args(made.model, data, out))
    assert code == 2, lines
    assert_one_line(lines, "bad.jsonl:2")
    assert not (tmp_path / "new").exists()  # the folders this run made are gone again; tmp_path stays


def test_overwrite_replaces_the_old_run_once_the_inputs_load(made, tmp_path):
    out = copy_run(made, tmp_path)
    code, lines = run(*train_args(made.model, made.data, out, "--overwrite", max_steps=1, save_every=1, eval_every=1))
    assert code == 0, lines
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert set(steps) == {1}  # the old run's metrics went, none were appended to
    assert not (out / "checkpoints").exists() and not (out / "tensorboard").exists() and not (out / ".solo.lock").exists()


# --resume PATH of another run's checkpoint replaces the run in --output: only with --overwrite.


def test_resume_of_another_runs_checkpoint_over_a_finished_run_needs_overwrite(made, tmp_path):
    out = copy_run(made, tmp_path, "finished")
    other = made.run / "checkpoints" / "step-2"
    before = snapshot(out)
    args = train_args(made.model, made.data, out, "--resume", other)
    code, lines = run(*args)
    assert code == 2, lines
    assert_one_line(lines, f"--output {out}", "already holds a run", "--resume", "another run's checkpoint", "--overwrite")
    assert snapshot(out) == before
    code, lines = run(*args, "--overwrite")
    assert code == 0, lines
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps and min(steps) == 3  # continued from step 2, in a folder cleared of the run it replaced
    assert not (out / "checkpoints" / "step-2").exists() and (out / "adapter.safetensors").is_file()


def test_resume_of_the_runs_own_checkpoint_is_no_overwrite(made, tmp_path):
    out = copy_run(made, tmp_path)
    before = snapshot(out)
    for resume in ("auto", out / "checkpoints" / "step-2"):
        code, lines = run(*train_args(made.model, made.data, out, "--resume", resume, "--overwrite"))
        assert code == 2, lines
        assert_one_line(lines, "--resume", "--overwrite", "contradict")
    assert snapshot(out) == before


# Values that trained silently or allocated without bound.


@pytest.mark.parametrize("rank", [33, 1_000_000_000])
def test_rank_above_the_hidden_size_is_refused_before_allocating(made, tmp_path, rank):
    out = tmp_path / "r"
    code, lines = run(*train_args(made.model, made.data, out, rank=rank))
    assert code == 2, lines
    assert_one_line(lines, f"--rank {rank}", "between 1 and 32", "hidden size")
    assert not (out / "adapter.safetensors").exists() and not (out / ".solo.lock").exists()


def test_rank_at_the_hidden_size_trains_an_adapter_solo_reads(made, tmp_path):
    out = tmp_path / "r32"
    code, lines = run(*train_args(made.model, made.data, out, rank=32, max_steps=1, save_every=1, eval_every=1))
    assert code == 0, lines
    code, lines = run("inspect", out / "adapter.safetensors")
    assert code == 0, lines


def test_rank_from_yaml_is_bounded_too(made, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("rank: 1000000000\n")
    code, lines = run(*train_args(made.model, made.data, tmp_path / "y", "--config", config))
    assert code == 2, lines
    assert_one_line(lines, "--rank 1000000000", "hidden size")


def test_max_seq_length_without_a_token_to_train_is_refused(made, tmp_path):
    code, lines = run(*train_args(made.model, made.data, tmp_path / "m", max_seq_length=1))
    assert code == 2, lines
    assert_one_line(lines, "--max-seq-length 1", "at least 2")
    assert TrainConfig(max_seq_length=2).validate().max_seq_length == 2


def test_a_learning_rate_no_run_survives_is_refused(made, tmp_path):
    code, lines = run(*train_args(made.model, made.data, tmp_path / "lr", lr="1e6"))
    assert code == 2, lines
    assert_one_line(lines, "--lr 1000000.0", f"above {MAX_LR:g}")
    assert not (tmp_path / "lr").exists()
    assert TrainConfig(lr=MAX_LR).validate().lr == MAX_LR


# The YAML --config gets the flags' checks, and hostile YAML is one line.


@pytest.mark.parametrize(
    "text, needles",
    [
        ("seed: 99999999999999999999\n", ["--seed 99999999999999999999", "4294967295"]),
        ("seed: -1\n", ["--seed -1", "4294967295"]),
        ("lr: 1000000.0\n", ["--lr", "above"]),
        ("max_seq_length: 1\n", ["--max-seq-length 1"]),
        ("model: " + "[" * 2000 + "]" * 2000 + "\n", ["nested more than"]),
        ("model:\n" + "".join("  " * i + f"- k{i}:\n" for i in range(1, 40)) + "  " * 40 + "- x\n", ["nested more than"]),
        ("data: [" + ", ".join([f"{{a: {'[' * 30}1{']' * 30}}}"] * 3) + "]\n", ["nested more than"]),
    ],
)
def test_hostile_yaml_values_are_one_line_naming_the_file(made, tmp_path, text, needles):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    code, lines = run(*train_args(made.model, made.data, tmp_path / "y", "--config", config))
    assert code == 2, lines
    assert_one_line(lines, f"--config {config}", *needles)
    assert not (tmp_path / "y").exists()


def test_a_yaml_alias_bomb_is_refused_before_it_expands(made, tmp_path):
    # 9**6 strings once expanded (small enough to expand safely without the fix, which then printed them all)
    lines = ["model:", '  - &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcde", "bcdef"):
        lines.append(f"  - &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    config = tmp_path / "bomb.yaml"
    config.write_text("\n".join(lines) + "\n")
    code, out = run(*train_args(made.model, made.data, tmp_path / "y", "--config", config))
    assert code == 2, out
    line = assert_one_line(out, f"--config {config}", "line 3", "aliases")
    assert len(line) < 300


def test_a_yaml_value_of_the_wrong_type_is_shown_short(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model: [" + ", ".join(["averyveryverylongvalue"] * 1000) + "]\n")
    with pytest.raises(UsageError, match=r"model must be str, got \['averyveryverylongvalue', .*\.\.\.\]") as caught:
        build_config(config, {})
    assert len(caught.value.message) < 300


# Tracebacks that are now one line.


def test_a_lock_with_an_absurd_pid_is_stale(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    holder = {"pid": 99999999999999999999, "host": socket.gethostname(), "started": "2025-01-01T00:00:00Z"}
    (folder / ".solo.lock").write_text(json.dumps(holder))
    path = lock.acquire(folder)  # no process can have that pid: the lock is stale, and taken over
    assert json.loads(path.read_text())["pid"] == os.getpid()
    lock.release(folder)
    assert not path.exists()


@pytest.fixture
def read_only_tensorboard(monkeypatch):
    """Make ``RUN/tensorboard`` unwritable (root ignores mode bits, so its temporary files are refused too)."""
    folders = []
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and any(Path(dir).resolve() == f.resolve() for f in folders):
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    yield folders
    for folder in folders:
        folder.chmod(0o755)


def test_a_read_only_tensorboard_folder_is_one_line_before_anything_is_written(made, tmp_path, read_only_tensorboard):
    out = copy_run(made, tmp_path)
    (out / "adapter.safetensors").unlink()  # unfinished: --resume auto continues it (a finished run is left alone)
    (out / "tensorboard").chmod(0o555)
    read_only_tensorboard.append(out / "tensorboard")
    before = snapshot(out)
    for extra in (["--overwrite"], ["--resume", "auto"]):
        code, lines = run(*train_args(made.model, made.data, out, "--report-to", "tensorboard", *extra))
        assert code == 2, lines
        assert_one_line(lines, f"cannot write in {out / 'tensorboard'}", "--report-to tensorboard")
        assert snapshot(out) == before


def test_a_tensorboard_writer_that_cannot_write_is_one_line(made, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("torch.utils.tensorboard.SummaryWriter", refuse)
    code, lines = run(*train_args(made.model, made.data, tmp_path / "tb", "--report-to", "tensorboard"))
    assert code == 2, lines
    assert_one_line(lines, "--report-to tensorboard", "cannot write in", "Permission denied")
    assert not (tmp_path / "tb" / ".solo.lock").exists()


@pytest.mark.parametrize("name", ["metrics.jsonl", "config.json", "README.md", "loss.png"])
def test_a_full_disk_while_train_writes_its_files_is_one_line(made, tmp_path, monkeypatch, name):
    import solo_cli.files.atomic as atomic

    real_open, real_path = Path.open, atomic.atomic_path

    def full_open(self, mode="r", *args, **kwargs):
        if self.name == name and "a" in mode:
            raise OSError(28, "No space left on device")
        return real_open(self, mode, *args, **kwargs)

    def full_path(target):
        if Path(target).name == name:
            raise OSError(28, "No space left on device")
        return real_path(target)

    monkeypatch.setattr(Path, "open", full_open)
    monkeypatch.setattr(atomic, "atomic_path", full_path)
    out = tmp_path / "full"
    code, lines = run(*train_args(made.model, made.data, out))
    assert code == 1, lines
    assert_one_line(lines, f"no space left on device writing {out / name}", "--output")
    assert not (out / ".solo.lock").exists()
    assert [p.name for p in out.rglob(".*")] == []  # no temporary file left


def test_a_full_disk_while_train_writes_a_checkpoint_is_one_line(made, tmp_path, monkeypatch):
    def save_file(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("solo_cli.training.checkpoint.save_file", save_file)
    out = tmp_path / "full"
    code, lines = run(*train_args(made.model, made.data, out))
    assert code == 1, lines
    assert_one_line(lines, "no space left on device", "step-2", "--output")
    assert not (out / "checkpoints" / "step-2").exists() and not (out / "adapter.safetensors").exists()


# Issue 23: a README.md the user writes while the run trains is kept.


def test_a_readme_written_during_training_is_not_replaced_by_the_card(made, tmp_path, monkeypatch):
    out = tmp_path / "readme"
    mine = "# My notes on this run\n"
    real = RunFolder.save_adapter

    def user_writes_readme(self, *args, **kwargs):  # the run's last write before the card
        self.card.write_text(mine)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(RunFolder, "save_adapter", user_writes_readme)
    code, lines = run(*train_args(made.model, made.data, out))
    assert code == 0, lines
    assert (out / "README.md").read_text() == mine and (out / "adapter.safetensors").is_file()


def test_a_card_solo_wrote_is_rewritten_at_the_end(made, tmp_path):
    out = copy_run(made, tmp_path)
    (out / "adapter.safetensors").unlink()  # unfinished: --resume auto runs its last step (a finished run is left alone)
    (out / "README.md").write_text((out / "README.md").read_text().replace("- steps: 3", "- steps: old"))
    code, lines = run(*train_args(made.model, made.data, out, "--resume", "auto"))
    assert code == 0, lines
    assert "- steps: 3" in (out / "README.md").read_text()


# Third-party noise stays off the terminal.


def test_bitsandbytes_and_hub_warnings_stay_off_the_terminal(tmp_path):
    fake = tmp_path / "site" / "bitsandbytes"  # logs as bitsandbytes does on import (backends/cpu/ops.py)
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import logging\n"
        "logging.getLogger(__name__ + '.backends.cpu.ops').warning(\n"
        "    'Failed to load CPU gemm_4bit_forward from kernels-community: x. Please make sure you already '\n"
        "    '`pip install kernels` and the kernels >= 0.11.1')\n"
    )
    code = (  # as a command runs: inside third_party.captured (handle_errors), route()d once transformers is imported
        "import logging\n"
        "from solo_cli.cli import third_party\n"
        "with third_party.captured():\n"
        "    import bitsandbytes\n"
        "    from transformers.utils import logging as hf_logging\n"
        "    third_party.route()\n"
        "    logging.getLogger('huggingface_hub.utils._http').warning(\"'[Errno -2]' thrown while requesting HEAD x\")\n"
        "    logging.getLogger('torchao').warning('Failed to load torchao/_C_mxfp8.so: Could not load this library')\n"
        "    logging.getLogger('torch.utils._pytree').warning('KernelPreference is an Enum subclass ... deprecated')\n"
        "    hf_logging.get_logger('transformers.generation.utils').warning('Setting pad_token_id to eos_token_id')\n"
        "    logging.getLogger('bitsandbytes').error('a real error still shows')\n"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    for noise in ("gemm_4bit_forward", "thrown while requesting", "_C_mxfp8", "Enum subclass", "pad_token_id"):
        assert noise not in done.stderr, done.stderr
    assert "a real error still shows" in done.stderr
