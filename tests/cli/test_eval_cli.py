"""solo eval end to end: loss, generation, scoring, predictions files, and scoring without a model."""

import json
from pathlib import Path

from support import write_jsonl
from typer.testing import CliRunner

from solo_cli.cli import app

runner = CliRunner()
SAMPLE_TEST = Path(__file__).resolve().parents[2] / "sample_data" / "e2e" / "test.jsonl"


def test_eval_generates_scores_and_writes_predictions_and_metrics(tiny_model_dir, tmp_path):
    rows = [{"prompt": f"name[Place {i % 3}] ->", "completion": f" Place {i % 3} is a pub number {i}."} for i in range(6)]
    data = write_jsonl(tmp_path / "valid.jsonl", rows)
    preds = tmp_path / "preds.jsonl"
    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            tiny_model_dir,
            "--data",
            str(data),
            "-o",
            str(preds),
            "--json",
            "--max-new-tokens",
            "6",
            "--num-beams",
            "2",
            "--no-repeat-ngram-size",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    for key in ("loss", "perplexity", "bleu", "nist", "meteor", "rouge_l", "cider", "chrf"):
        assert key in report
    assert report["prompts"] == 3  # rows sharing a prompt are one multi-reference item
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(lines) == 3 and len(lines[0]["references"]) == 2 and "prediction" in lines[0]
    saved = json.loads((tmp_path / "preds.metrics.json").read_text())
    assert saved["bleu"] == report["bleu"]


def test_eval_scores_a_predictions_file_without_a_model(tmp_path):
    rows = [json.loads(line) for line in SAMPLE_TEST.read_text().splitlines()]
    perfect = tmp_path / "perfect.txt"
    perfect.write_text("".join(r["references"][0] + "\n" for r in rows))
    result = runner.invoke(app, ["eval", "--predictions", str(perfect), "--data", str(SAMPLE_TEST), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["bleu"] == 1.0 and report["chrf"] == 100.0 and "loss" not in report
    table = runner.invoke(app, ["eval", "--predictions", str(perfect), "--data", str(SAMPLE_TEST)])
    assert table.exit_code == 0 and "BLEU" in table.output and "CIDEr" in table.output
    short = tmp_path / "short.txt"
    short.write_text("one line\n")
    bad = runner.invoke(app, ["eval", "--predictions", str(short), "--data", str(SAMPLE_TEST)])
    assert bad.exit_code == 2 and "1 predictions for 50 prompts" in bad.output


def test_eval_loss_only_on_text_rows(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "t.jsonl", [{"text": "hello world"}, {"text": "the quick brown fox"}])
    result = runner.invoke(app, ["eval", "--model", tiny_model_dir, "--data", str(data), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["loss"] > 0 and report["perplexity"] > 1 and "bleu" not in report
