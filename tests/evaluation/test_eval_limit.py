"""`solo eval --limit N` scores the rows of the first N prompts in every part of eval, and the title says what was scored."""

import json

from support import run, write_jsonl

# six rows, three prompts, each prompt's two rows apart (E2E has one row per reference)
ROWS = [{"prompt": f"name[Place {i % 3}] ->", "completion": f" Place {i % 3} is a pub number {i}."} for i in range(6)]


def report(*args) -> dict:
    code, lines = run("eval", *args, "--json")
    assert code == 0, lines
    return json.loads("\n".join(lines))


def test_the_limit_applies_to_the_loss_and_the_title_says_what_was_scored(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no java: the Python metrics only, quickly
    data = write_jsonl(tmp_path / "test.jsonl", ROWS)
    first_two = write_jsonl(tmp_path / "first-two.jsonl", [r for r in ROWS if not r["prompt"].startswith("name[Place 2]")])
    limited = report("--model", tiny_model_dir, "--data", data, "--no-generate", "--limit", 2)
    alone = report("--model", tiny_model_dir, "--data", first_two, "--no-generate")
    assert (limited["rows"], limited["rows_in_split"], limited["split"]) == (4, 6, str(data))
    assert limited["loss_tokens"] == alone["loss_tokens"] and limited["loss"] == alone["loss"]
    code, lines = run("eval", "--model", tiny_model_dir, "--data", data, "--no-generate", "--limit", 2)
    assert code == 0 and lines[0] == f"eval: {data} (4 of 6 rows)", lines
    code, lines = run("eval", "--model", tiny_model_dir, "--data", data, "--limit", 1, "--max-new-tokens", 2)
    assert code == 0 and lines[0] == f"eval: {data} (2 of 6 rows, 1 prompts)", lines


def test_the_limit_counts_text_rows_one_by_one(tiny_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "t.jsonl", [{"text": "hello world"}, {"text": "the quick brown fox"}, {"text": "a b c"}])
    limited = report("--model", tiny_model_dir, "--data", data, "--limit", 1)
    alone = report("--model", tiny_model_dir, "--data", write_jsonl(tmp_path / "one.jsonl", [{"text": "hello world"}]))
    assert limited["rows"] == 1 and limited["loss_tokens"] == alone["loss_tokens"]


def test_the_title_keeps_a_long_path_whole(tiny_model_dir, tmp_path):
    folder = tmp_path / ("a-folder-name-long-enough-to-be-wider-than-the-table-of-metrics" * 2)
    folder.mkdir()
    data = write_jsonl(folder / "test.jsonl", ROWS)
    code, lines = run("eval", "--model", tiny_model_dir, "--data", data, "--no-generate")
    assert code == 0 and lines[0] == f"eval: {data} (6 rows)", lines
