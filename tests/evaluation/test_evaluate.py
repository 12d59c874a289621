"""solo_cli.evaluation.evaluate: the one function `solo eval` calls, and scoring without torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from solo_cli.errors import UsageError
from solo_cli.evaluation.config import EvalConfig
from solo_cli.evaluation.evaluate import evaluate

SAMPLE_TEST = Path(__file__).resolve().parents[2] / "sample_data" / "e2e" / "test.jsonl"


def _first_references(path: Path) -> Path:
    rows = [json.loads(line) for line in SAMPLE_TEST.read_text().splitlines()]
    path.write_text("".join(r["references"][0] + "\n" for r in rows))
    return path


def test_scoring_a_predictions_file_returns_a_result(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java: the Python metrics only, quickly
    result = evaluate(EvalConfig(data=SAMPLE_TEST, predictions=_first_references(tmp_path / "p.txt"), limit=None))
    report = result.to_dict()
    assert list(report)[:3] == ["data", "prompts", "bleu"] and "loss" not in report
    assert result.prompts == 50 and result.scores.bleu == 1.0 and result.scores.chrf == 100.0


def test_library_errors_name_parameters(tmp_path):
    with pytest.raises(UsageError) as caught:
        evaluate(EvalConfig(data=SAMPLE_TEST, batch_size=0))
    assert caught.value.message.startswith("batch_size 0") and caught.value.as_flags().startswith("--batch-size 0")
    with pytest.raises(UsageError, match="predictions scores an existing file; drop model/adapter"):
        evaluate(EvalConfig(data=SAMPLE_TEST, predictions=tmp_path / "p.txt"), load=lambda: None)


def test_eval_predictions_imports_no_torch(tmp_path):
    """`solo eval --predictions` reads, scores and prints without importing torch or transformers."""
    predictions = _first_references(tmp_path / "p.txt")
    code = (
        "import sys; from solo_cli.cli import main\n"
        "sys.argv = ['solo', 'eval', '--data', sys.argv[1], '--predictions', sys.argv[2], '--json']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "print([m for m in ('torch', 'transformers') if m in sys.modules])"
    )
    env = dict(os.environ, PATH=str(tmp_path))  # no java: the Python metrics only, quickly
    done = subprocess.run(
        [sys.executable, "-c", code, str(SAMPLE_TEST), str(predictions)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    report, imported = done.stdout.rstrip("\n").rsplit("\n", 1)
    assert json.loads(report)["bleu"] == 1.0
    assert imported == "[]"
