"""`solo eval` and `solo generate --input` read rows as training does: one reader, one cached encoder, the same
checks and the same names for a bad row (``file:line``, ``file row N``)."""

import json

import pytest
from support import assert_one_line, run, write_jsonl

from solo_cli.evaluation.config import EvalConfig
from solo_cli.evaluation.evaluate import evaluate
from solo_cli.inference.load import load_for_inference

PC = [{"prompt": f"name[Place {i}] ->", "completion": f" Place {i} is a cheap pub."} for i in range(4)]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def test_eval_loss_comes_from_the_cached_encoded_split(tiny_model_dir, tmp_path, monkeypatch):
    from solo_cli.data import split_encoding

    path = write_jsonl(tmp_path / "test.jsonl", PC)
    config = EvalConfig(data=path, generate=False)
    first = evaluate(config, lambda: load_for_inference(str(tiny_model_dir)))
    assert list(split_encoding.cache_dir().glob("*.arrow"))  # the split was encoded into the cache, as training's is

    def tokenize_again(*args, **kwargs):
        raise AssertionError("tokenized again: eval's loss data did not go through the cached encoder")

    monkeypatch.setattr(split_encoding, "_encode_batch", tokenize_again)
    again = evaluate(config, lambda: load_for_inference(str(tiny_model_dir)))
    assert again.loss == first.loss and again.loss_tokens == first.loss_tokens > 0


def test_eval_names_a_bad_jsonl_line(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "test.jsonl", PC)
    path.write_text(path.read_text() + '{"prompt": "p", "completion": 5}\n')
    code, lines = run("eval", "--model", tiny_model_dir, "--data", path, "--no-generate")
    assert code == 2
    assert_one_line(lines, f'{path}:5, key "completion": expected a string, got int (5)')


def test_generate_input_from_a_json_array_names_a_null_row(tiny_model_dir, tmp_path):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps([{"prompt": "a"}, None]))
    code, lines = run("generate", "--model", tiny_model_dir, "--input", path, "--output", tmp_path / "preds.jsonl")
    assert code == 2
    assert_one_line(lines, f"{path} row 2: expected a JSON object, got null")
    path.write_text(json.dumps([{"prompt": "a"}, {"prompt": "b", "references": [" x"]}]))
    code, lines = run(
        "generate", "--model", tiny_model_dir, "--input", path, "--output", tmp_path / "preds.jsonl", "--max-new-tokens", 2
    )
    assert code == 0, lines
    written = [json.loads(line) for line in (tmp_path / "preds.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in written] == ["a", "b"] and written[1]["references"] == [" x"]


def test_generate_input_names_a_bad_jsonl_line(tiny_model_dir, tmp_path):
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "a"}, {"prompt": ""}])
    code, lines = run("generate", "--model", tiny_model_dir, "--input", path, "--output", tmp_path / "preds.jsonl")
    assert code == 2
    assert_one_line(lines, f'{path}:2, key "prompt": the prompt is empty; fill it in or drop the row')
