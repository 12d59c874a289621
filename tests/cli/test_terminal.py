"""What reaches the terminal: escaped file content, one-line errors, signals, flag ranges, layout at 80 columns."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from support import REPO, info_for, make_adapter, write_jsonl
from tiny import make_model
from typer.testing import CliRunner

from solo_cli import save_adapter
from solo_cli.cli import app, display

runner = CliRunner()
EVIL = "\x1b[2J\x1b[31mEVIL [bold]loud[/bold] \x9b2J \x07\x7f\u202e"


def invoke(*args, input=None, env=None):
    result = runner.invoke(app, [str(a) for a in args], input=input, env=env)
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result, lines


def one_error_line(result, lines, *needles, code=2):
    assert result.exit_code == code, result.output
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and len(lines) == 1, lines
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert "Traceback" not in result.output and "╭" not in result.output
    return errors[0]


def no_raw_controls(text: str) -> None:
    bad = [c for c in text if c != "\n" and (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c == "\u202e")]
    assert not bad, [hex(ord(c)) for c in bad]


@pytest.fixture
def adapter_path(tmp_path):
    model = make_model("llama")
    adapter = make_adapter(model)
    return save_adapter(tmp_path / "adapter.safetensors", adapter, info_for(model, adapter))


def rewrite_header(src: Path, dst: Path, **values) -> Path:
    with safe_open(str(src), framework="pt") as handle:
        meta = dict(handle.metadata())
    meta |= {key: json.dumps(value) for key, value in values.items()}
    save_file(load_file(str(src)), str(dst), metadata=meta)
    return dst


# 1. terminal safety ------------------------------------------------------------------------------


def test_inspect_escapes_control_characters_and_prints_markup_literally(adapter_path, tmp_path):
    evil = rewrite_header(
        adapter_path,
        tmp_path / "evil.safetensors",
        base_model=EVIL,
        base_revision="[red]rev[/red]",
        solo_version="0.2\x1b]0;title\x07",
        training={"steps\x1b[1m": "[bold]x[/bold]\x1b", "data": "[valid.jsonl test.jsonl]"},
    )
    result, _ = invoke("inspect", evil)
    assert result.exit_code == 0, result.output
    no_raw_controls(result.output)
    for shown in (
        "\\x1b[2J\\x1b[31mEVIL [bold]loud[/bold] \\x9b2J \\x07\\x7f\\u202e",
        "[red]rev[/red]",
        "0.2\\x1b]0;title\\x07",
        "steps\\x1b[1m=[bold]x[/bold]\\x1b",
        "data=[valid.jsonl test.jsonl]",
    ):
        assert shown in result.output, result.output


def test_error_lines_escape_control_characters_and_stay_one_line(tmp_path):
    result, lines = invoke("generate", "--model", tmp_path / f"nope{EVIL}\nsecond", "hi")
    line = one_error_line(result, lines, "--model", "\\x1b[2J", "[bold]loud[/bold]", "\\nsecond")
    no_raw_controls(result.output)
    assert line.count("\n") == 0


def test_display_error_and_warning_escape_everything(capsys):
    display.error(f"a{EVIL}\nb\tc")
    display.warning("[bold]w[/bold]\x1b[0m")
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "error: a\\x1b[2J\\x1b[31mEVIL [bold]loud[/bold] \\x9b2J \\x07\\x7f\\u202e\\nb\\tc",
        "warning: [bold]w[/bold]\\x1b[0m",
    ]


def test_clean_keeps_text_and_escapes_only_what_is_not_printable():
    assert display.clean("héllo wörld 🙂 שלום مرحبا 👨‍👩‍👧") == "héllo wörld 🙂 שלום مرحبا 👨‍👩‍👧"
    assert display.clean("a\nb\tc\x1b", multiline=True) == "a\nb\tc\\x1b"
    assert display.clean("a\nb") == "a\\nb"
    assert display.clean(5) == "5"


# 2. eval --predictions ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, 5, {"a": [1]}, ["x"], True])
def test_non_string_predictions_are_refused_naming_the_line(tmp_path, value):
    data = write_jsonl(tmp_path / "test.jsonl", [{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}])
    preds = write_jsonl(tmp_path / "preds.jsonl", [{"prediction": "c1"}, {"prediction": value}])
    result, lines = invoke("eval", "--predictions", preds, "--data", data)
    one_error_line(result, lines, f"{preds}:2", '"prediction"', "string")


# 3. generate input, empty prompts, signals -------------------------------------------------------


def test_generate_refuses_inputs_that_are_not_regular_files(tiny_model_dir, tmp_path):
    fifo = tmp_path / "rows.fifo"
    os.mkfifo(fifo)
    folder = tmp_path / "folder"
    folder.mkdir()
    for source in (fifo, Path("/dev/null"), folder):
        args = [*solo(), "generate", "--model", tiny_model_dir, "--input", str(source), "--output", str(tmp_path / "p.jsonl")]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=child_env())
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 1 and f"--input {source}" in lines[0] and "not a regular file" in lines[0], lines


@pytest.mark.parametrize("how", ["argument", "stdin", "blank stdin"])
def test_an_empty_prompt_is_refused_in_one_line(tiny_model_dir, how):
    if how == "argument":
        result, lines = invoke("generate", "--model", tiny_model_dir, "--device", "cpu", "")
    else:
        result, lines = invoke(
            "generate", "--model", tiny_model_dir, "--device", "cpu", "-", input="" if how == "stdin" else "\n\n"
        )
    one_error_line(result, lines, "the prompt is empty")


def solo():
    return [sys.executable, "-m", "solo_cli"]


def child_env():
    return os.environ | {"COLUMNS": "200", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def interrupt(args, signum, delay):
    proc = subprocess.Popen([*solo(), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    time.sleep(delay)
    assert proc.poll() is None, "the command finished before the signal"
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 130, stderr
    assert lines == ["error: interrupted"], stderr


@pytest.fixture
def many_rows(tmp_path):
    return write_jsonl(
        tmp_path / "rows.jsonl", [{"prompt": f"name[Place {i}] ->", "completion": " Place is a pub."} for i in range(400)]
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("delay", [0.15, 3.0])
def test_generate_interrupted_early_or_late_says_one_line_and_exits_130(tiny_model_dir, many_rows, tmp_path, signum, delay):
    out = tmp_path / "preds.jsonl"
    args = ["generate", "--model", tiny_model_dir, "--device", "cpu", "--input", many_rows, "-o", out, "--batch-size", "1"]
    interrupt([str(a) for a in args], signum, delay)
    assert not out.exists()


def test_eval_terminated_says_one_line_and_exits_130(tiny_model_dir, many_rows):
    args = ["eval", "--model", tiny_model_dir, "--device", "cpu", "--data", many_rows, "--batch-size", "1"]
    interrupt([str(a) for a in args], signal.SIGTERM, 3.0)


# 4. flag ranges ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--temperature", "nan"], ["--temperature nan", ">= 0"]),
        (["--temperature", "-1"], ["--temperature -1", ">= 0"]),
        (["--temperature", "inf"], ["--temperature inf", ">= 0"]),
        (["--top-p", "0"], ["--top-p 0", "(0, 1]"]),
        (["--top-p", "5"], ["--top-p 5", "(0, 1]"]),
        (["--top-p", "nan"], ["--top-p nan", "(0, 1]"]),
        (["--top-k", "-3"], ["--top-k -3", "0 or more"]),
        (["--seed", "-1"], ["--seed -1", "2**32 - 1"]),
        (["--max-new-tokens", "0"], ["--max-new-tokens 0", "at least 1"]),
    ],
)
def test_generate_refuses_out_of_range_flags(tiny_model_dir, flags, needles):
    result, lines = invoke("generate", "--model", tiny_model_dir, "--device", "cpu", *flags, "hi")
    one_error_line(result, lines, *needles)


@pytest.mark.parametrize(
    "flags, needles",
    [
        (["--max-seq-length", "-5"], ["--max-seq-length -5", "at least 1"]),
        (["--length-penalty", "nan"], ["--length-penalty nan", "finite"]),
        (["--no-repeat-ngram-size", "-2"], ["--no-repeat-ngram-size -2", "0 or more"]),
    ],
)
def test_eval_refuses_out_of_range_flags(tiny_model_dir, tiny_data, flags, needles):
    result, lines = invoke("eval", "--model", tiny_model_dir, "--device", "cpu", "--data", tiny_data / "valid.jsonl", *flags)
    one_error_line(result, lines, *needles)


def test_merge_refuses_rank_0(adapter_path, tmp_path):
    result, lines = invoke("merge", adapter_path, adapter_path, "-o", tmp_path / "m.safetensors", "--rank", "0")
    one_error_line(result, lines, "--rank 0", "at least 1")
    assert not (tmp_path / "m.safetensors").exists()


def test_train_refuses_an_empty_output(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result, lines = invoke("train", "--model", tiny_model_dir, "--data", tiny_data, "--output", "", "--max-steps", 1)
    one_error_line(result, lines, "--output", "empty")
    assert not (tmp_path / "adapter.safetensors").exists()


# 5. layout ---------------------------------------------------------------------------------------


def test_piped_lines_are_not_hard_wrapped_at_80_columns(adapter_path, tmp_path, capsys):
    long = rewrite_header(adapter_path, tmp_path / "long.safetensors", training={f"key{i}": "value " * 3 for i in range(12)})
    result, lines = invoke("inspect", long, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    training = [line for line in lines if line.startswith("training: ")]
    assert len(training) == 1 and "key11=" in training[0], lines
    shown = display.TrainDisplay()
    shown.on_step(
        {
            "step": 12345,
            "total_steps": 99999,
            "loss": 1.23456,
            "lr": 1e-4,
            "gate": 0.5,
            "tokens_per_s": 123456.0,
            "elapsed": 36000.0,
            "remaining": 360000.0,
        }
    )
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 and out.startswith("step 12345/99999") and "eta " in out, out


def test_help_at_80_columns_is_readable_and_literal():
    result, lines = invoke("train", "--help", env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert "[valid.jsonl test.jsonl]" in " ".join(result.output.split())
    assert any("Recompute activations to save memory." in line for line in lines), result.output
    assert all(len(line) <= 80 for line in lines)


@pytest.mark.parametrize(
    "args, needles",
    [
        (["eval"], ["--data", "solo eval --help"]),
        (["train", "--rank", "many"], ["--rank", "solo train --help"]),
        (["train", "--bogus"], ["--bogus", "solo train --help"]),
        (["frobnicate"], ["frobnicate", "solo --help"]),
    ],
)
def test_usage_errors_are_one_line(args, needles):
    result, lines = invoke(*args)
    one_error_line(result, lines, *needles)


def test_dry_run_shows_multibyte_characters_split_across_tokens(tiny_model_dir, tmp_path):
    text = "🙂 שלום مرحبا 😀"
    data = write_jsonl(tmp_path / "train.jsonl", [{"prompt": f"{text} ->", "completion": f" {text}"}] * 8)
    result, _ = invoke("train", "--model", tiny_model_dir, "--data", data, "-o", tmp_path / "run", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "\ufffd" not in result.output
    assert result.output.count(text) >= 2, result.output


# 6. messages that mislead ------------------------------------------------------------------------


def test_an_unreadable_adapter_says_so(adapter_path, monkeypatch):
    real_open = Path.open

    def deny(self, *args, **kwargs):
        if self == adapter_path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    result, lines = invoke("inspect", adapter_path)
    line = one_error_line(result, lines, str(adapter_path), "Permission denied")
    assert "No such file" not in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_adapter_without_read_permission_says_so(adapter_path):
    adapter_path.chmod(0)
    result, lines = invoke("inspect", adapter_path)
    one_error_line(result, lines, "Permission denied")


@pytest.mark.parametrize("command", ["train", "eval"])
def test_a_fifo_or_device_as_data_is_not_a_regular_file(tiny_model_dir, tmp_path, command):
    fifo = tmp_path / "data.fifo"
    os.mkfifo(fifo)
    for source in (fifo, "/dev/null"):
        result, lines = invoke(command, "--model", tiny_model_dir, "--data", source, "-o", tmp_path / "o")
        line = one_error_line(result, lines, f"--data {source}", "not a regular file")
        assert "no such" not in line


def test_a_float_format_version_is_malformed_not_newer(adapter_path, tmp_path):
    path = rewrite_header(adapter_path, tmp_path / "fv.safetensors", format_version=1.0)
    result, lines = invoke("inspect", path)
    line = one_error_line(result, lines, "format_version 1.0", "integer")
    assert "upgrade" not in line


def test_a_run_folder_as_model_says_to_pass_it_as_adapter(tiny_model_dir, tmp_path):
    run = tmp_path / "ref"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": tiny_model_dir, "connections": "chain"}))
    (run / "adapter.safetensors").write_bytes(b"x")
    result, lines = invoke("generate", "--model", run, "hi")
    one_error_line(result, lines, f"--model {run}", "solo run folder", f"--adapter {run}", f"--model {tiny_model_dir}")


def test_a_long_list_of_connection_problems_is_cut(tiny_model_dir, tiny_data, tmp_path):
    result, lines = invoke(
        "train", "--model", tiny_model_dir, "--data", tiny_data, "-o", tmp_path / "o", "--connections", "top:99"
    )
    line = one_error_line(result, lines, "--connections", "more")
    assert len(line) < 400, line


def test_an_export_folder_holding_an_adapter_is_still_a_model(tiny_model_dir, tmp_path):
    import shutil

    from solo_cli.engine.models import resolve_model_path

    export = Path(shutil.copytree(tiny_model_dir, tmp_path / "export"))
    (export / "adapter.safetensors").write_bytes(b"x")  # merge --export copies the adapter beside the model
    assert resolve_model_path(str(export)) == (str(export.resolve()), True)
    best = tmp_path / "run" / "best"
    best.mkdir(parents=True)
    (best / "adapter.safetensors").write_bytes(b"x")
    result, lines = invoke("generate", "--model", best, "hi")
    one_error_line(result, lines, "solo run folder", f"--adapter {best}")


def test_an_empty_prompt_row_is_refused_naming_its_line(tiny_model_dir, tmp_path):
    rows = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "hello"}, {"prompt": ""}])
    out = tmp_path / "preds.jsonl"
    result, lines = invoke("generate", "--model", tiny_model_dir, "--device", "cpu", "--input", rows, "-o", out)
    one_error_line(result, lines, f"{rows}:2", 'key "prompt": the prompt is empty')
    assert not out.exists()


def test_generate_refuses_a_prompt_of_no_tokens_before_generating(tokenizer):
    from solo_cli.errors import UsageError
    from solo_cli.inference.generation import GenerationSettings, generate

    with pytest.raises(UsageError, match=r"^prompt #2: the prompt is empty"):
        generate(make_model("llama"), tokenizer, ["hello", ""], GenerationSettings(max_new_tokens=2), chat=False)
    with pytest.raises(UsageError, match=r"^top_p 0: must be in \(0, 1\]"):
        generate(make_model("llama"), tokenizer, ["hello"], GenerationSettings(top_p=0.0), chat=False)


# 7. off a terminal (| tee, CI, nohup) ------------------------------------------------------------


def test_piped_progress_follows_log_every(tiny_model_dir, tiny_data, tmp_path):
    flags = ["--max-steps", 6, "--log-every", 2, "--batch-size", 4, "--eval-every", 6, "--connections", "top:1"]
    result, lines = invoke("train", "--model", tiny_model_dir, "--data", tiny_data, "-o", tmp_path / "run", *flags)
    assert result.exit_code == 0, result.output
    steps = [line.split()[1] for line in lines if re.match(r"step \d+/\d+ loss ", line)]
    assert steps == ["2/6", "4/6", "6/6"], lines  # it showed steps 1, every 10th and the last of those reported


def test_a_piped_dry_run_marks_the_masked_tokens_and_shows_every_value_whole(tiny_model_dir, tiny_data, tmp_path):
    every = "emb->0,emb->1,emb->2,emb->3,0->1,0->2,0->3,1->2,1->3,2->3"  # longer than a table's column at 80
    flags = ["--dry-run", "--connections", every, "--max-steps", 10]
    result, lines = invoke(
        "train", "--model", tiny_model_dir, "--data", tiny_data, "-o", tmp_path / "r", *flags, env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    assert "first example (⟦masked⟧, the rest trained)" in lines
    example = result.output.split("first example (⟦masked⟧, the rest trained)\n", 1)[1]
    masked, trained = example.split("⟦", 1)[1].split("⟧", 1)
    assert "name[Place" in masked and "<|im_start|>assistant" in masked  # the prompt and the template's header
    assert trained.startswith(" Place ") and "⟦" not in trained  # the reply is trained
    resolved = dict(m.groups() for m in (re.match(r"  (\S+)\s{2,}(\S.*)$", line) for line in lines) if m)
    assert resolved["connections"] == every and "…" not in result.output and "..." not in resolved["connections"]
    assert resolved["eval_every"].startswith("2 (") and resolved["homotopy_steps"].startswith("1 (0.1 of 10 steps")
    assert resolved["save_every"].startswith("2 ") and resolved["max_steps"] == "10"
    assert "None" not in resolved.values()
