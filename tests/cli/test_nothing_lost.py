"""Nothing is lost: no command deletes or replaces what solo did not write, no adapter or checkpoint
holds a non-finite tensor, a resume continues only the run it belongs to, one run at a time owns
its folder, and a checkpoint always has a valid copy on disk.

Each case here was found by an adversarial review: `merge --export . --overwrite` emptied the
current folder; `--lr 1e308` kept a checkpoint of inf weights as "the last good one"; `--resume
auto` accepted another model, other data and a new --lr (and crashed on --gate zero-init); two
`solo train -o runs/race` ran at once; a killed save left hidden staging folders behind.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
from support import (
    REPO,
    info_for,
    run,  # noqa: E402
    write_jsonl,
)
from support import assert_one_line as error_line  # noqa: E402
from tiny import make_model, save_tiny
from typer.testing import CliRunner

from solo_cli.cli import app
from solo_cli.engine.adapter import AdapterConfig, SoloAdapter
from solo_cli.engine.adapter_file import save_adapter
from solo_cli.engine.models import load_model
from solo_cli.errors import RuntimeFailure
from solo_cli.files import atomic
from solo_cli.training.config import TrainConfig
from solo_cli.training.run import check_output, execute, prepare
from solo_cli.training.trainer import Interrupted

runner = CliRunner()
ROWS = [{"prompt": f"name[Place {i}] ->", "completion": f" Place {i} is a cheap pub."} for i in range(16)]
FLAGS = {
    "--max-steps": 4,
    "--connections": "emb->2,1->3",
    "--rank": 2,
    "--batch-size": 4,
    "--lr": 0.01,
    "--save-every": 2,
    "--eval-every": 2,
    "--device": "cpu",
}
UNRELATED = b"my own bytes \x00\xff, not solo's\n"


def train_args(model, data, out, *extra, **changes):
    flags = FLAGS | {f"--{k.replace('_', '-')}": v for k, v in changes.items()}
    return [
        "train",
        "--model",
        model,
        "--data",
        data,
        "-o",
        out,
        "--no-chat-template",
        *[x for kv in flags.items() for x in kv],
        *extra,
    ]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under ``root``, by relative path."""
    root = Path(root)
    if root.is_file():
        return {".": root.read_bytes()}
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def all_finite(folder: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for p in Path(folder).rglob("*.safetensors") for t in load_file(str(p)).values())


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_model_dir):
    """A finished run with checkpoints (step-2), and an export of its adapter."""
    root = tmp_path_factory.mktemp("made")
    data = root / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", ROWS)
    write_jsonl(data / "valid.jsonl", ROWS[:4])
    out = root / "run"
    code, lines = run(*train_args(tiny_model_dir, data, out))
    assert code == 0, lines
    export = root / "export"
    code, lines = run("merge", out / "adapter.safetensors", "--model", tiny_model_dir, "--export", export)
    assert code == 0, lines
    return SimpleNamespace(
        root=root, data=data, run=out, export=export, adapter=out / "adapter.safetensors", model=tiny_model_dir
    )


def copy_run(made, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(made.run, out)
    return out


def copy_unfinished(made, tmp_path) -> Path:
    """The run before its last steps: no final adapter yet, so --resume auto continues it (a finished run is left alone)."""
    out = copy_run(made, tmp_path)
    (out / "adapter.safetensors").unlink()
    return out


# 1. --overwrite replaces only what solo wrote, and never the current folder or one above it.


def test_export_over_the_current_folder_is_refused_and_deletes_nothing(made, tiny_model_dir, tmp_path, monkeypatch):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "notes.txt").write_bytes(UNRELATED)
    (work / "sub" / "data.bin").write_bytes(UNRELATED)
    shutil.copytree(made.export, tmp_path / "exported")
    before = snapshot(tmp_path)
    monkeypatch.chdir(work)
    for target in (".", "..", str(work), str(work) + "/"):
        code, lines = run("merge", made.adapter, "--model", tiny_model_dir, "--export", target, "--overwrite")
        assert code == 2
        error_line(lines, f"--export {Path(target)}", "current folder", "choose another")
    monkeypatch.chdir(tmp_path / "exported")  # even a solo export is not replaced while it is the current folder
    code, lines = run("merge", made.adapter, "--model", tiny_model_dir, "--export", ".", "--overwrite")
    assert code == 2
    error_line(lines, "current folder")
    assert snapshot(tmp_path) == before


def test_train_overwrite_of_the_current_run_folder_is_refused(made, tiny_model_dir, tmp_path, monkeypatch):
    out = copy_run(made, tmp_path)
    before = snapshot(out)
    monkeypatch.chdir(out)
    code, lines = run(*train_args(tiny_model_dir, made.data, ".", "--overwrite"))
    assert code == 2
    error_line(lines, "--output .", "current folder")
    assert snapshot(out) == before


def test_overwrite_refuses_a_folder_or_file_solo_did_not_write(made, tiny_model_dir, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"model_type": "llama"}')  # e.g. a model folder
    (mine / "metrics.jsonl").write_bytes(UNRELATED)
    (mine / "notes.txt").write_bytes(UNRELATED)
    notes = tmp_path / "notes.txt"
    notes.write_bytes(UNRELATED)
    weights = tmp_path / "weights.safetensors"
    save_file({"w": torch.ones(2)}, str(weights))  # a safetensors file, but not a solo adapter
    before = snapshot(tmp_path)
    cases = [
        (train_args(tiny_model_dir, made.data, mine, "--overwrite"), "--output", "not a solo run's outputs"),
        (train_args(tiny_model_dir, made.data, mine), "--output", "not a solo run's outputs"),
        (["merge", made.adapter, "-o", weights, "--overwrite"], "--output", "not a solo adapter"),
        (["merge", made.adapter, "-o", notes, "--overwrite"], "--output", "not a solo adapter"),
        (["merge", made.adapter, "--model", tiny_model_dir, "--export", mine, "--overwrite"], "--export", "not a solo export"),
        (["merge", made.adapter, "--model", tiny_model_dir, "--export", notes, "--overwrite"], "--export", "not a solo export"),
        (
            ["merge", made.adapter, "--model", tiny_model_dir, "--export", made.run, "--overwrite"],
            "--export",
            "not a solo export",
        ),
    ]
    for args, flag, needle in cases:
        code, lines = run(*args)
        assert code == 2, (args, lines)
        error_line(lines, flag, needle, "choose another")
        assert snapshot(tmp_path) == before, args


def test_overwrite_replaces_what_solo_wrote(made, tiny_model_dir, tmp_path):
    export = tmp_path / "export"
    shutil.copytree(made.export, export)
    (export / "stale.txt").write_text("from the previous export")
    code, lines = run("merge", made.adapter, "--model", tiny_model_dir, "--export", export, "--overwrite")
    assert code == 0, lines
    assert not (export / "stale.txt").exists() and (export / "config.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging or aside folder left
    merged = tmp_path / "merged.safetensors"
    shutil.copyfile(made.adapter, merged)
    code, lines = run("merge", made.adapter, made.adapter, "-o", merged, "--overwrite")
    assert code == 0, lines
    out = copy_run(made, tmp_path)
    (out / "notes.txt").write_bytes(UNRELATED)  # a file of the user's inside a run folder is kept
    code, lines = run(*train_args(tiny_model_dir, made.data, out, "--overwrite", max_steps=1))
    assert code == 0, lines
    assert (out / "notes.txt").read_bytes() == UNRELATED
    assert not (out / "checkpoints").exists()  # the old run's checkpoints went; one step saves none


# 2. No command deletes or replaces a file it did not create.

PREDICTIONS_CASES = [
    ("train", "file", False),
    ("train", "file", True),
    ("train", "folder", False),
    ("train", "folder", True),
    ("merge", "file", False),
    ("merge", "file", True),
    ("merge", "folder", False),
    ("merge", "folder", True),
    ("export", "file", False),
    ("export", "file", True),
    ("export", "folder", False),
    ("export", "folder", True),
    ("generate", "file", False),
    ("generate", "folder", False),
    ("eval", "file", False),
    ("eval", "folder", False),
]


@pytest.mark.parametrize("command, what, overwrite", PREDICTIONS_CASES)
def test_no_command_replaces_a_file_it_did_not_write(made, tiny_model_dir, tmp_path, command, what, overwrite):
    target = tmp_path / ("out.safetensors" if command == "merge" and what == "file" else "out")
    if what == "file":
        target.write_bytes(UNRELATED)
    else:  # a folder holding the very names the command writes, and more
        target.mkdir()
        for name in ("config.json", "adapter.safetensors", "metrics.jsonl", "model.safetensors", "notes.txt"):
            (target / name).write_bytes(UNRELATED)
        (target / "checkpoints").mkdir()
        (target / "checkpoints" / "mine.txt").write_bytes(UNRELATED)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "name[Place 1] ->", "completion": " Place 1."}])
    args = {
        "train": train_args(tiny_model_dir, made.data, target, max_steps=1),
        "merge": ["merge", made.adapter, "-o", target],
        "export": ["merge", made.adapter, "--model", tiny_model_dir, "--export", target],
        "generate": ["generate", "--model", tiny_model_dir, "--input", prompts, "--output", target, "--max-new-tokens", 2],
        "eval": ["eval", "--model", tiny_model_dir, "--data", prompts, "--output", target, "--max-new-tokens", 2],
    }[command]
    before = snapshot(target)
    code, lines = run(*args, *(["--overwrite"] if overwrite else []))
    assert code == 2, lines
    error_line(lines, "--export" if command == "export" else "--output", str(target))
    assert snapshot(target) == before


def test_train_into_a_folder_of_other_files_keeps_them(made, tiny_model_dir, tmp_path):
    out = tmp_path / "shared"
    out.mkdir()
    (out / "notes.txt").write_bytes(UNRELATED)
    (out / ".hidden").write_bytes(UNRELATED)
    code, lines = run(*train_args(tiny_model_dir, made.data, out, max_steps=1))
    assert code == 0, lines
    assert (out / "notes.txt").read_bytes() == UNRELATED and (out / ".hidden").read_bytes() == UNRELATED


def test_generate_and_eval_replace_their_own_predictions_only(tiny_model_dir, tmp_path):
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "name[Place 1] ->", "completion": " Place 1."}])
    for command, flags in (("generate", ["--input", prompts]), ("eval", ["--data", prompts])):
        out = tmp_path / f"{command}.jsonl"
        args = [command, "--model", tiny_model_dir, *flags, "--output", out, "--max-new-tokens", 2]
        for _ in range(2):  # the second run replaces the predictions the first one wrote
            code, lines = run(*args)
            assert code == 0, lines
            assert all("prediction" in json.loads(line) for line in out.read_text().splitlines())
    metrics = tmp_path / "eval.metrics.json"
    metrics.write_bytes(UNRELATED)  # the metrics beside eval's predictions: also solo's own only
    code, lines = run("eval", "--model", tiny_model_dir, "--data", prompts, "--output", tmp_path / "eval.jsonl")
    assert code == 2
    error_line(lines, "--output", str(metrics), "choose another")
    assert metrics.read_bytes() == UNRELATED


# 3. No adapter or checkpoint ever holds a non-finite tensor.


def test_a_huge_learning_rate_stops_before_saving_non_finite_weights(made, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("solo_cli.training.config.MAX_LR", float("inf"))  # past --lr's bound, to the divergence check
    out = tmp_path / "huge"
    code, lines = run(*train_args(tiny_model_dir, made.data, out, lr=1e308, save_every=1, eval_every=1))
    assert code == 1
    error_line(lines, "training stopped at step 1", "diverged", "--lr")
    assert not list(out.rglob("step-*")) and not (out / "adapter.safetensors").exists()
    assert all_finite(out)


def test_save_adapter_refuses_a_non_finite_tensor_and_writes_nothing(tmp_path):
    model = make_model("llama")
    adapter = SoloAdapter(AdapterConfig([(0, 3)], 2, "schedule", 1, 32, source_norm="rms"))
    with torch.no_grad():
        adapter.connections["0_3"].B[1, 0] = float("inf")
    with pytest.raises(RuntimeFailure, match=r"connections\.0_3\.B .*NaN or infinite.*nothing was written"):
        save_adapter(tmp_path / "a.safetensors", adapter, info_for(model, adapter))
    assert list(tmp_path.iterdir()) == []


def test_save_checkpoint_refuses_non_finite_weights_or_optimizer_state(made, tiny_model_dir, tmp_path):
    from solo_cli.training.checkpoint import save_checkpoint
    from solo_cli.training.trainer import Trainer, TrainState

    cfg = TrainConfig(data=str(made.data), output=str(tmp_path / "r"), connections="emb->2,1->3", rank=2, device="cpu")
    prepared = prepare(cfg.validate(), load_model(tiny_model_dir))
    trainer = Trainer(prepared.loaded.model, prepared.adapter, cfg, 2, prepared.device, 4)
    info = info_for(prepared.loaded.model, prepared.adapter)
    folder = tmp_path / "r" / "checkpoints" / "step-1"
    param = prepared.adapter.connections["1_3"].A
    trainer.optimizer.state[param] = {"step": torch.tensor(1.0), "exp_avg": torch.full_like(param, float("nan"))}
    trainer.optimizer.state[param]["exp_avg_sq"] = torch.zeros_like(param)
    with pytest.raises(RuntimeFailure, match=r"connections\.1_3\.A\.exp_avg .*NaN or infinite"):
        save_checkpoint(folder, trainer, TrainState(step=1), info)
    trainer.optimizer.state.clear()
    with torch.no_grad():
        param[0, 0] = float("-inf")
    with pytest.raises(RuntimeFailure, match=r"connections\.1_3\.A .*NaN or infinite"):
        save_checkpoint(folder, trainer, TrainState(step=1), info)
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").rglob("*"))


# 4. A resume continues only the run it belongs to.


def test_resume_refuses_other_settings_listing_each_difference(made, tiny_model_dir, tmp_path):
    out = copy_run(made, tmp_path)
    before = snapshot(out)
    qwen = save_tiny(tmp_path / "tiny-qwen2", "qwen2")
    other_data = tmp_path / "other"
    shutil.copytree(made.data, other_data)
    cases = [
        (train_args(qwen, made.data, out, "--resume", "auto"), [f"--model {tiny_model_dir} -> {qwen}"]),
        (train_args(tiny_model_dir, other_data, out, "--resume", "auto"), [f"--data {made.data} -> {other_data}"]),
        (train_args(tiny_model_dir, made.data, out, "--resume", "auto", lr=0.02), ["--lr 0.01 -> 0.02"]),
        (
            train_args(tiny_model_dir, made.data, out, "--resume", "auto", "--gate", "zero-init", "--seed", 3, rank=3),
            ["--gate schedule -> zero-init", "--seed 0 -> 3", "--rank 2 -> 3"],
        ),
        (
            train_args(tiny_model_dir, made.data, out, "--resume", "auto", "--train-on-prompt", "--warmup", 1, batch_size=8),
            ["--batch-size 4 -> 8", "--warmup 0 -> 1", "--train-on-prompt false -> true"],
        ),
        (
            train_args(tiny_model_dir, made.data, out, "--resume", "auto", "--max-seq-length", 64, max_steps=6),
            ["--max-steps 4 -> 6"],
        ),
    ]
    for args, differences in cases:
        code, lines = run(*args)
        assert code == 2, (args, lines)
        error_line(lines, "--resume auto", *differences, "resume with the run's flags")
        assert snapshot(out) == before


def test_resume_refuses_changed_training_data(made, tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(made.data, data)
    out = tmp_path / "run"
    code, lines = run(*train_args(tiny_model_dir, data, out))
    assert code == 0, lines
    assert json.loads((out / "config.json").read_text())["data_sha256"]["train"]
    write_jsonl(data / "train.jsonl", ROWS[::-1])
    code, lines = run(*train_args(tiny_model_dir, data, out, "--resume", "auto"))
    assert code == 2
    error_line(lines, "--data", "train.jsonl", "sha256", "->")


def test_resume_may_change_only_the_bookkeeping_flags(made, tiny_model_dir, tmp_path):
    out = copy_unfinished(made, tmp_path)
    extra = ["--resume", "auto", "--keep-checkpoints", 1, "--grad-checkpoint"]
    code, lines = run(*train_args(tiny_model_dir, made.data, out, *extra, eval_every=1, save_every=1))
    assert code == 0, lines
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-3"]


def test_resume_checks_the_checkpoint_itself_when_the_run_has_no_config(made, tiny_model_dir, tmp_path):
    """A checkpoint of a run without config.json (older solo): its adapter header is compared; no KeyError."""
    out = copy_run(made, tmp_path)
    (out / "config.json").unlink()
    before = snapshot(out)
    code, lines = run(*train_args(tiny_model_dir, made.data, out, "--resume", "auto", "--gate", "zero-init"))
    assert code == 2, lines
    error_line(lines, "--resume", "--gate schedule -> zero-init", "resume with the run's flags")
    code, lines = run(*train_args(tiny_model_dir, made.data, out, "--resume", "auto", connections="1->3"))
    assert code == 2, lines
    error_line(lines, "--resume", "--connections emb->2,1->3 -> 1->3")
    qwen = save_tiny(tmp_path / "tiny-qwen2", "qwen2")
    code, lines = run(*train_args(qwen, made.data, out, "--resume", "auto"))
    assert code == 2, lines
    error_line(lines, "--resume", "llama", "qwen2", "--model")
    assert snapshot(out) == before


# 5. One run at a time owns its folder.


def write_lock(folder: Path, pid: int, host: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / ".solo.lock"
    lock.write_text(json.dumps({"pid": pid, "host": host, "started": "2025-01-01T00:00:00Z"}))
    return lock


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_live_lock_refuses_a_second_run(made, tiny_model_dir, tmp_path):
    host = socket.gethostname()
    for out, pid, where in ((tmp_path / "race", os.getpid(), host), (tmp_path / "far", 12345, "other-host")):
        lock = write_lock(out, pid, where)
        before = snapshot(out)
        code, lines = run(*train_args(tiny_model_dir, made.data, out))
        assert code == 2, lines
        error_line(lines, f"--output {out}", f"pid {pid}", where, ".solo.lock")
        assert snapshot(out) == before and lock.is_file()
    out = copy_run(made, tmp_path)
    write_lock(out, os.getpid(), host)
    before = snapshot(out)
    code, lines = run(*train_args(tiny_model_dir, made.data, out, "--resume", "auto"))
    assert code == 2
    error_line(lines, f"pid {os.getpid()}")
    code, lines = run(*train_args(tiny_model_dir, made.data, out, "--overwrite"))
    assert code == 2
    error_line(lines, f"pid {os.getpid()}")
    assert snapshot(out) == before


def test_a_stale_lock_is_taken_over_and_every_run_releases_its_lock(made, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("solo_cli.training.config.MAX_LR", float("inf"))  # --lr 1e308: an error while training
    out = tmp_path / "stale"
    write_lock(out, dead_pid(), socket.gethostname())
    code, lines = run(*train_args(tiny_model_dir, made.data, out))
    assert code == 0, lines
    assert not (out / ".solo.lock").exists()
    code, lines = run(*train_args(tiny_model_dir, made.data, out, "--overwrite", lr=1e308))  # an error
    assert code == 1 and not (out / ".solo.lock").exists()
    code, lines = run(*train_args(tiny_model_dir, made.data, tmp_path / "bad", "--model", tmp_path / "nothing"))
    assert code == 2 and not (tmp_path / "bad" / ".solo.lock").exists()


def test_a_second_process_cannot_take_a_held_lock(made, tiny_model_dir, tmp_path):
    out = tmp_path / "race"
    holder_code = (
        "import sys; from pathlib import Path; from solo_cli.files import lock; out = Path(sys.argv[1]); "
        "out.mkdir(parents=True, exist_ok=True); lock.acquire(out); print('held', flush=True); sys.stdin.read()"
    )
    for ending in ("exit", "kill"):
        holder = subprocess.Popen(
            [sys.executable, "-c", holder_code, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        try:
            assert holder.stdout.readline().strip() == "held"
            code, lines = run(*train_args(tiny_model_dir, made.data, out, "--overwrite", max_steps=1))
            assert code == 2, lines
            error_line(lines, f"pid {holder.pid}", socket.gethostname())
        finally:
            if ending == "exit":
                holder.stdin.close()  # the holder ends normally and releases its lock
            else:
                holder.kill()  # SIGKILL: the lock stays, naming a dead process
            holder.wait(timeout=60)
        assert (out / ".solo.lock").exists() == (ending == "kill")
        code, lines = run(*train_args(tiny_model_dir, made.data, out, "--overwrite", max_steps=1))
        assert code == 0, lines
        assert not (out / ".solo.lock").exists()


def test_an_interrupted_run_releases_its_lock(made, tiny_model_dir, tmp_path):
    out = tmp_path / "int"
    cfg = TrainConfig(**resume_config(made, out)).validate()
    prepared = prepare(cfg, load_model(tiny_model_dir))
    check_output(cfg)
    assert (out / ".solo.lock").is_file()
    with pytest.raises(Interrupted):
        execute(prepared, signal_at(1))
    assert not (out / ".solo.lock").exists()


# 6. A checkpoint always has a valid copy; staging folders of a killed save are cleaned up.


def resume_config(made, out, **kw):
    values = dict(
        model=made.model,
        data=str(made.data),
        output=str(out),
        connections="emb->2,1->3",
        rank=2,
        lr=0.01,
        max_steps=4,
        batch_size=4,
        save_every=2,
        eval_every=2,
        device="cpu",
        chat_template=False,
    )
    return values | kw


def signal_at(step):
    def callback(event, info):
        if event == "step" and info["step"] == step:
            os.kill(os.getpid(), signal.SIGINT)

    return callback


def test_stale_staging_folders_are_removed_on_start_and_nothing_else(made, tiny_model_dir, tmp_path):
    out = copy_unfinished(made, tmp_path)
    checkpoints = out / "checkpoints"
    for name in (".step-4.k3j2h1g0", ".step-2.ab_d9xyz.tmp", ".step-3.0123abcd.old"):
        (checkpoints / name).mkdir()
        (checkpoints / name / "adapter.safetensors").write_bytes(b"half-written")
    mine = {".notes": UNRELATED, "keep.txt": UNRELATED, ".step-4.my-backup": UNRELATED}
    for name, data in mine.items():
        (checkpoints / name).write_bytes(data)
    check_output(TrainConfig(**resume_config(made, out, resume="auto")).validate())
    from solo_cli.files import lock

    lock.release(out)
    assert sorted(p.name for p in checkpoints.iterdir()) == sorted(["step-2", *mine])
    assert all((checkpoints / name).read_bytes() == data for name, data in mine.items())


def test_a_checkpoint_moved_aside_by_a_killed_save_is_restored(made, tiny_model_dir, tmp_path):
    out = copy_unfinished(made, tmp_path)
    checkpoints = out / "checkpoints"
    before = snapshot(checkpoints / "step-2")
    os.rename(checkpoints / "step-2", checkpoints / ".step-2.q1w2e3r4.old")  # killed between the two renames
    (checkpoints / ".step-2.z9x8c7v6.tmp").mkdir()
    code, lines = run(*train_args(tiny_model_dir, made.data, out, "--resume", "auto"))
    assert code == 0, lines
    assert "resuming from step 2" in " ".join(lines)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-2"]
    assert snapshot(checkpoints / "step-2") == before


def test_atomic_dir_keeps_the_old_copy_until_the_new_one_is_in_place(tmp_path, monkeypatch):
    target = tmp_path / "step-3"
    target.mkdir()
    (target / "f").write_text("old")
    real_rmtree = atomic.shutil.rmtree

    def rmtree(path, *args, **kwargs):
        assert (target / "f").read_text() == "new", "the old copy was deleted before the new one was in place"
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(atomic.shutil, "rmtree", rmtree)
    with atomic.atomic_dir(target) as staging:
        (staging / "f").write_text("new")
    assert (target / "f").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["step-3"]
    monkeypatch.setattr(atomic.shutil, "rmtree", real_rmtree)

    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(src).name.endswith(".tmp"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError), atomic.atomic_dir(target) as staging:
        (staging / "f").write_text("newer")
    assert (target / "f").read_text() == "new"  # the failed swap put the old copy back
    assert [p.name for p in tmp_path.iterdir()] == ["step-3"]


def test_an_interrupt_on_a_save_step_writes_that_checkpoint_once(made, tiny_model_dir, tmp_path, monkeypatch):
    import solo_cli.training.run as run_module

    saved = []
    real = run_module.save_checkpoint

    def counting(folder, *args, **kwargs):
        saved.append(Path(folder).name)
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(run_module, "save_checkpoint", counting)
    out = tmp_path / "int"
    cfg = TrainConfig(**resume_config(made, out)).validate()
    prepared = prepare(cfg, load_model(tiny_model_dir))
    check_output(cfg)
    with pytest.raises(Interrupted, match="interrupted at step 2 of 4; checkpoint saved in .*step-2"):
        execute(prepared, signal_at(2))
    assert saved == ["step-2"]
    del saved[:]
    with pytest.raises(Interrupted, match="interrupted at step 3 of 4; checkpoint saved in .*step-3"):
        cfg = TrainConfig(**resume_config(made, out, resume="auto")).validate()
        resumed = prepare(cfg, load_model(tiny_model_dir))
        check_output(cfg)
        execute(resumed, signal_at(3))
    assert saved == ["step-3"]


def test_generate_refuses_writing_over_its_own_input(tiny_model_dir, tmp_path):
    rows = tmp_path / "small.jsonl"
    rows.write_text('{"prompt": "p ->"}\n')
    before = rows.read_bytes()
    result = runner.invoke(app, ["generate", "--model", tiny_model_dir, "--input", str(rows), "-o", str(rows)])
    assert result.exit_code == 2 and "is the --input file" in result.output
    assert rows.read_bytes() == before


def test_output_to_a_character_device_or_fifo_is_written_as_a_stream(tiny_model_dir, tmp_path):
    """-o /dev/null (or a FIFO) is written into, never replaced by a regular file."""
    import os
    import threading

    rows = tmp_path / "in.jsonl"
    rows.write_text('{"prompt": "p ->"}\n')
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    args = ["generate", "--model", tiny_model_dir, "--input", str(rows), "--max-new-tokens", "2"]
    result = runner.invoke(app, [*args, "-o", str(fifo)])
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert fifo.is_fifo() and '"prediction"' in received[0]
    assert runner.invoke(app, [*args, "-o", "/dev/null"]).exit_code == 0
    assert Path("/dev/null").is_char_device()


def test_train_without_data_touches_no_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 2 and "--data is required" in result.output
    missing = runner.invoke(app, ["train", "--data", "nope.jsonl", "-o", "out"])
    assert missing.exit_code == 2
    assert list(tmp_path.iterdir()) == []
