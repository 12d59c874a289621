"""solo eval's pieces: grouping references, loss and perplexity, reading predictions files."""

import math

import pytest
import torch
from support import encode_rows, read_rows, write_jsonl

from solo_cli.engine.loss import causal_lm_loss
from solo_cli.engine.models import load_model
from solo_cli.errors import UsageError
from solo_cli.evaluation.eval_set import eval_set
from solo_cli.evaluation.model_eval import loss_and_perplexity
from solo_cli.evaluation.predictions import metrics_path, read_predictions


def test_rows_of_one_prompt_become_one_multi_reference_item():
    rows = [
        {"prompt": "a", "completion": "x"},
        {"prompt": "b", "completion": "y"},
        {"prompt": "a", "completion": "z"},
    ]
    data = eval_set(rows, "completion")
    assert data.prompts == ["a", "b"] and data.references == [["x", "z"], ["y"]]
    refs = eval_set([{"prompt": "a", "references": ["r1", "r2"]}], "prompt")
    assert refs.references == [["r1", "r2"]]
    chat = eval_set([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]}], "chat")
    assert chat.prompts == [[{"role": "user", "content": "q"}]] and chat.references == [["r"]]
    with pytest.raises(UsageError, match="text rows"):
        eval_set([{"text": "t"}], "text")


def test_loss_and_perplexity_match_a_direct_computation(tiny_model_dir, tmp_path):
    from solo_cli.evaluation.eval_set import load_eval_split

    loaded = load_model(tiny_model_dir)
    rows = [{"prompt": f"name[Place {i}] ->", "completion": f" Place {i} is a pub."} for i in range(5)]
    result = loss_and_perplexity(
        loaded.model,
        loaded.tokenizer,
        load_eval_split(write_jsonl(tmp_path / "test.jsonl", rows)),
        chat_template=False,
        max_seq_length=64,
        batch_size=2,
        device=torch.device("cpu"),
    )
    from solo_cli.data.row_encoding import collate

    encoded = encode_rows(rows, "completion", loaded.tokenizer, chat_template=False, train_on_prompt=False, max_len=64)
    with torch.no_grad():
        loss, count = causal_lm_loss(loaded.model, collate(encoded.examples, loaded.tokenizer.pad_token_id))
    assert result["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(float(loss)), rel=1e-5)
    assert result["loss_tokens"] == count
    assert (
        loss_and_perplexity(
            loaded.model,
            loaded.tokenizer,
            load_eval_split(write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "p"}])),
            chat_template=False,
            max_seq_length=64,
            batch_size=2,
            device=torch.device("cpu"),
        )
        is None
    )


def test_predictions_files_plain_and_jsonl(tmp_path):
    plain = tmp_path / "out.txt"
    plain.write_text("first\n\nthird\n")
    assert read_predictions(plain, 3) == ["first", "", "third"]
    jsonl = write_jsonl(tmp_path / "p.jsonl", [{"prediction": "a"}, {"prediction": "b", "prompt": "x"}])
    assert read_predictions(jsonl, 2) == ["a", "b"]
    with pytest.raises(UsageError, match="2 predictions for 3 prompts"):
        read_predictions(jsonl, 3)
    write_jsonl(tmp_path / "bad.jsonl", [{"prediction": "a"}, {"text": "b"}])
    with pytest.raises(UsageError, match="bad.jsonl:2"):
        read_predictions(tmp_path / "bad.jsonl", 2)
    assert metrics_path(tmp_path / "preds.jsonl").name == "preds.metrics.json"


def test_shipped_test_split_reads_as_prompts_with_references():
    from pathlib import Path

    rows, fmt = read_rows(Path(__file__).resolve().parents[2] / "sample_data" / "e2e" / "test.jsonl")
    data = eval_set(rows, fmt)
    assert fmt == "prompt" and len(data.prompts) == 50 and all(data.references)
