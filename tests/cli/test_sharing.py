"""Sharing a run: --report-to tensorboard, a model card in every run folder and export, and adapters
by Hub repo id, used as people on a plane would: HF_HOME holds a pre-filled hub cache and
HF_HUB_OFFLINE=1, so nothing touches the network (the base model itself comes from that cache)."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from support import REPO, assert_one_line, run, write_jsonl

from solo_cli.files.outputs import is_solo_card

COMMIT = "0123456789abcdef0123456789abcdef01234567"
ROWS = [{"prompt": f"name[Place {i}] ->", "completion": f" Place {i} is a cheap pub."} for i in range(16)]


def prefill(cache: Path, repo_id: str, source: Path, names=None, ref: str = "main", commit: str = COMMIT) -> Path:
    """The layout huggingface_hub leaves after a download: refs/<ref> -> commit, snapshots/<commit>/files."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in Path(source).iterdir():
        if path.is_file() and (names is None or path.name in names):
            shutil.copyfile(path, snapshot / path.name)
    return snapshot


def solo(env: dict, *args):
    done = subprocess.run(
        [sys.executable, "-m", "solo_cli", *map(str, args)], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    return done.returncode, done.stdout, done.stderr


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_model_dir):
    """A run trained on me/tiny (from the offline hub cache) with --report-to tensorboard, then put in
    the cache as the adapter repo me/solo-e2e."""
    root = tmp_path_factory.mktemp("sharing")
    home = root / "hf"
    prefill(home / "hub", "me/tiny", Path(tiny_model_dir))
    data = root / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", ROWS)
    write_jsonl(data / "valid.jsonl", ROWS[:4])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env |= {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "SOLO_CACHE": str(root / "solo-cache"), "OMP_NUM_THREADS": "1"}
    out = root / "run"
    flags = ["--max-steps", 4, "--eval-every", 2, "--batch-size", 4, "--rank", 2, "--connections", "emb->2,1->3"]
    args = ["train", "--model", "me/tiny", "--data", data, "-o", out, "--device", "cpu", "--report-to", "tensorboard", *flags]
    code, stdout, stderr = solo(env, *args)
    assert code == 0, stdout + stderr
    snapshot = prefill(home / "hub", "me/solo-e2e", out, names=("adapter.safetensors", "README.md"))
    return SimpleNamespace(root=root, home=home, env=env, run=out, data=data, snapshot=snapshot)


@pytest.fixture
def offline_hub(shared, monkeypatch):
    """The same cache for commands run in-process."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(shared.home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return shared


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tensorboard_holds_what_metrics_jsonl_holds(shared):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(shared.run / "tensorboard"))
    events.Reload()
    records = _metrics(shared.run)
    steps = [r for r in records if "loss" in r]
    valid = [r for r in records if "valid_loss" in r]
    for tag, key in (("train/loss", "loss"), ("train/lr", "lr"), ("train/gate", "gate"), ("train/tokens_per_s", "tokens_per_s")):
        logged = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in logged] == [r["step"] for r in steps], tag
        assert [v for _, v in logged] == pytest.approx([r[key] for r in steps], rel=1e-5, abs=1e-6), tag
    logged = [(e.step, e.value) for e in events.Scalars("eval/loss")]
    assert [s for s, _ in logged] == [r["step"] for r in valid] == [2, 4]
    assert [v for _, v in logged] == pytest.approx([r["valid_loss"] for r in valid], abs=1e-5)


def test_a_run_folder_carries_its_model_card(shared):
    card = (shared.run / "README.md").read_text()
    front = front_matter(card)
    assert front["base_model"] == "me/tiny" and front["library_name"] == "solo"
    assert {"solo", "solo-connection", "text-generation"} <= set(front["tags"])
    records = _metrics(shared.run)
    metrics = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert metrics["train_loss"] == pytest.approx([r["loss"] for r in records if "loss" in r][-1], abs=1e-4)
    assert metrics["valid_loss"] == pytest.approx(min(r["valid_loss"] for r in records if "valid_loss" in r), abs=1e-4)
    assert f"- data: `{shared.data}`" in card and "- steps: 4" in card
    assert "solo generate --model me/tiny --adapter" in card
    assert is_solo_card(shared.run / "README.md")


def test_inspect_and_generate_take_a_hub_repo_id_offline(shared, tiny_model_dir):
    code, stdout, stderr = solo(shared.env, "inspect", "me/solo-e2e", "--json")
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["path"] == str(shared.snapshot / "adapter.safetensors") and report["base_model"] == "me/tiny"
    code, stdout, stderr = solo(
        shared.env, "generate", "--model", tiny_model_dir, "--adapter", "me/solo-e2e", "hi", "--max-new-tokens", 3
    )
    assert code == 0, stderr
    code, stdout, stderr = solo(shared.env, "generate", "--model", tiny_model_dir, "--adapter", "me/missing", "hi")
    assert code == 2 and stdout == ""
    assert stderr.splitlines() == [stderr.strip()] and stderr.startswith("error: --adapter me/missing: no such local path")
    assert "HF_HUB_OFFLINE" in stderr


def test_merge_takes_hub_repo_ids_and_revisions(offline_hub, tmp_path):
    prefill(offline_hub.home / "hub", "me/solo-e2e", offline_hub.run, ("adapter.safetensors",), ref="v1", commit="f" * 40)
    merged = tmp_path / "merged.safetensors"
    code, lines = run("merge", "me/solo-e2e", "me/solo-e2e@v1", "-o", merged)
    assert code == 0, lines
    assert merged.is_file()
    code, lines = run("inspect", "me/solo-e2e", "--adapter-revision", "v2")
    assert code == 2
    assert "--adapter " not in assert_one_line(lines, "adapter me/solo-e2e (revision v2)")  # an argument, not a flag


def test_an_export_of_a_hub_adapter_carries_its_card(offline_hub, tiny_model_dir, tmp_path):
    export = tmp_path / "export"
    code, lines = run("merge", "me/solo-e2e", "--model", tiny_model_dir, "--export", export)
    assert code == 0, lines
    card = (export / "README.md").read_text()
    front = front_matter(card)
    assert front["base_model"] == "me/tiny" and front["library_name"] == "solo" and "custom_code" in front["tags"]
    assert "trust_remote_code=True" in card


def test_a_missing_hub_repo_offline_is_one_line(offline_hub):
    for args in (["inspect", "me/missing"], ["merge", "me/missing", "me/solo-e2e", "-o", "x.safetensors"]):
        code, lines = run(*args)
        assert code == 2, lines
        assert_one_line(lines, "me/missing: no such local path", "HF_HUB_OFFLINE")


def test_overwrite_replaces_the_card_and_event_files_but_not_a_readme_of_the_users(shared, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(shared.run, out)
    args = ["train", "--model", tiny_model_dir, "--data", shared.data, "-o", out, "--max-steps", 1, "--batch-size", 4]
    code, lines = run(*args, "--overwrite", "--device", "cpu")
    assert code == 0, lines
    assert not (out / "tensorboard").exists()  # this run reports to nothing; the old event files went
    assert is_solo_card(out / "README.md") and "- steps: 1" in (out / "README.md").read_text()
    (out / "README.md").write_text("# my notes\n")
    code, lines = run(*args, "--overwrite", "--device", "cpu")
    assert code == 2
    assert_one_line(lines, "not a solo run's outputs")
    assert (out / "README.md").read_text() == "# my notes\n"


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_report_to_wandb_without_wandb_is_one_line_before_anything_is_written(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    code, lines = run("train", "--model", tiny_model_dir, "--data", tmp_path, "-o", out, "--report-to", "wandb")
    assert code == 2
    assert_one_line(lines, "--report-to wandb: the wandb package is not installed; pip install wandb")
    assert not out.exists()
