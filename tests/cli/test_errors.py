"""The bad-input catalogue through the command line: one clear line, the right exit code, nothing lost."""

import json

import pytest
from support import write_jsonl
from typer.testing import CliRunner

from solo_cli.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result.exit_code, lines


def assert_one_line(lines, *needles):
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, lines
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert not any("Traceback" in line for line in lines)


@pytest.fixture
def files(tmp_path):
    good = [{"prompt": f"p{i} ->", "completion": f" c{i}"} for i in range(8)]
    paths = {
        "empty": tmp_path / "empty.jsonl",
        "notjson": tmp_path / "notjson.jsonl",
        "few": write_jsonl(tmp_path / "few.jsonl", good[:3]),
        "long": write_jsonl(tmp_path / "long.jsonl", [{"prompt": "word " * 200, "completion": " c"}] * 8),
        "mixed": write_jsonl(tmp_path / "mixed.jsonl", [good[0], {"text": "t"}]),
        "latin1": tmp_path / "latin1.jsonl",
        "yaml": tmp_path / "bad.yaml",
    }
    paths["empty"].write_text("")
    paths["notjson"].write_text(json.dumps(good[0]) + "\n{oops\n")
    paths["latin1"].write_bytes(json.dumps(good[0]).encode() + b'\n{"prompt": "caf\xe9", "completion": "x"}\n')
    paths["yaml"].write_text("rank: many\nbogus: 1\n")
    return paths


@pytest.mark.parametrize(
    "data_key, flags, needles",
    [
        ("empty", [], ["empty.jsonl", "no rows"]),
        ("notjson", [], ["notjson.jsonl:2:2", "not valid JSON"]),
        ("few", [], ["few.jsonl", "fewer than one batch", "--batch-size"]),
        ("long", ["--max-seq-length", "32"], ["long.jsonl", "--max-seq-length 32"]),
        ("mixed", [], ["mixed.jsonl:2", "one format per file"]),
        ("latin1", [], ["latin1.jsonl:2", "not UTF-8"]),
        (None, ["--data", "missing-dir/"], ["missing-dir", "no such file or folder"]),
        (None, ["--schedule", "sometimes"], ["--schedule"]),
        (None, ["--dtype", "float8"], ["--dtype"]),
        (None, ["--device", "tpu"], ["--device"]),
        (None, ["--device", "cuda"], ["--device cuda", "no CUDA"]),
        (None, ["--rank", "-1"], ["--rank"]),
        (None, ["--connections", "1->40"], ["1->40 is out of range"]),
        (None, ["--connections", "1->3,1->3"], ["listed twice"]),
        (None, ["--connections", "one->two"], ["cannot parse"]),
        ("yaml", [], ["bad.yaml", "unknown keys bogus"]),
    ],
)
def test_train_bad_input(files, tiny_model_dir, tiny_data, tmp_path, data_key, flags, needles):
    args = ["train", "--model", tiny_model_dir, "-o", tmp_path / "out", *flags]
    if data_key == "yaml":
        args += ["--config", files["yaml"], "--data", tiny_data]
    elif data_key:
        args += ["--data", files[data_key]]
    elif "--data" not in flags:
        args += ["--data", tiny_data]
    code, lines = run(*args)
    assert code == 2
    assert_one_line(lines, *needles)
    assert not (tmp_path / "out" / "adapter.safetensors").exists()


def test_prompts_too_long_are_skipped_with_a_warning(tiny_model_dir, tmp_path):
    rows = [{"prompt": "word " * 60, "completion": " c"}] * 2 + [{"prompt": f"p{i}", "completion": " c"} for i in range(8)]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            tiny_model_dir,
            "--data",
            str(data),
            "-o",
            str(tmp_path / "o"),
            "--max-seq-length",
            "32",
            "--max-steps",
            "1",
            "--connections",
            "top:1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "skipped 2 of 10 training rows" in result.output


def test_unwritable_output_fails_before_training(tiny_model_dir, tiny_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, lines = run("train", "--model", tiny_model_dir, "--data", tiny_data, "-o", blocker / "run")
    assert code == 2
    assert_one_line(lines, "--output", "cannot write there")


def test_adapter_problems(tiny_model_dir, tiny_data, tmp_path):
    from tiny import save_tiny

    code, lines = run(
        "train",
        "--model",
        tiny_model_dir,
        "--data",
        tiny_data,
        "-o",
        tmp_path / "run",
        "--max-steps",
        2,
        "--connections",
        "top:1",
    )
    assert code == 0
    adapter = tmp_path / "run" / "adapter.safetensors"
    other = save_tiny(tmp_path / "qwen", "qwen2")
    code, lines = run("generate", "--model", other, "--adapter", adapter, "hi")
    assert code == 2
    assert_one_line(lines, "was trained on", "--force")
    result = runner.invoke(
        app, ["generate", "--model", other, "--adapter", str(adapter), "--force", "--max-new-tokens", "2", "hi"]
    )
    assert result.exit_code == 0 and "warning:" in result.output and "--force" in result.output
    adapter.write_bytes(adapter.read_bytes()[:100])
    code, lines = run("inspect", adapter)
    assert code == 2
    assert_one_line(lines, "adapter.safetensors")
