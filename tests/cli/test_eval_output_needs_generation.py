"""`solo eval -o FILE` writes generated predictions (and metrics beside them): where nothing is
generated it is refused up front (issue 23), never accepted with no file written and nothing said."""

import pytest
from support import assert_one_line, run, write_jsonl

from solo_cli.errors import UsageError
from solo_cli.evaluation.config import EvalConfig


@pytest.fixture
def pairs(tmp_path):
    return write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p ->", "completion": " c"}])


def test_output_with_no_generate_is_refused_before_loading(pairs, tmp_path):
    out = tmp_path / "preds.jsonl"
    code, lines = run("eval", "--model", tmp_path / "no-such-model", "--data", pairs, "--no-generate", "-o", out)
    assert code == 2
    assert_one_line(lines, "--output", "--no-generate", "drop --output")
    assert not out.exists()


def test_output_on_text_rows_is_refused_before_loading(tmp_path):
    text = write_jsonl(tmp_path / "t.jsonl", [{"text": "hello world"}])
    out = tmp_path / "preds.jsonl"
    code, lines = run("eval", "--model", tmp_path / "no-such-model", "--data", text, "-o", out)
    assert code == 2
    assert_one_line(lines, f"--output {out}", "text rows", "drop --output")
    assert not out.exists()


def test_output_with_predictions_is_refused(pairs, tmp_path):
    preds = tmp_path / "p.txt"
    preds.write_text("c\n")
    out = tmp_path / "preds.jsonl"
    code, lines = run("eval", "--data", pairs, "--predictions", preds, "-o", out)
    assert code == 2
    assert_one_line(lines, "--output", "--predictions", "drop --output")
    assert not out.exists()


def test_the_library_refuses_it_too_naming_the_parameter(pairs, tmp_path):
    with pytest.raises(UsageError, match=r"^output writes generated predictions"):
        EvalConfig(data=pairs, output=tmp_path / "o.jsonl", generate=False).validate()


def test_text_rows_without_output_still_give_the_loss(tiny_model_dir, tmp_path):
    text = write_jsonl(tmp_path / "t.jsonl", [{"text": "hello world"}])
    code, lines = run("eval", "--model", tiny_model_dir, "--data", text)
    assert code == 0, lines
    assert any("loss" in line for line in lines)


def test_output_with_generation_writes_predictions_and_metrics(tiny_model_dir, pairs, tmp_path):
    out = tmp_path / "preds.jsonl"
    code, lines = run("eval", "--model", tiny_model_dir, "--data", pairs, "-o", out, "--max-new-tokens", 2)
    assert code == 0, lines
    assert out.exists() and (tmp_path / "preds.metrics.json").exists()
