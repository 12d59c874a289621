"""`solo eval` on preference pairs: how often the model prefers the chosen reply, and by how much, for any model."""

import json

import pytest
from support import encode_rows, run

from solo_cli.data.row_encoding import loss_tokens
from solo_cli.engine.loss import evaluate_loss
from solo_cli.engine.models import load_model

PAIRS = [
    {"prompt": "name[The Eagle] ->", "chosen": " The Eagle is a pub.", "rejected": " Blue Spice is a cheap coffee shop."},
    {"prompt": "name[Blue Spice] ->", "chosen": " Blue Spice is a pub.", "rejected": " The Eagle."},
    {"prompt": "name[Café] ->", "chosen": " Café is by the riverside.", "rejected": " Café is a pub."},
]


def reply_logp(model, tokenizer, prompt: str, reply: str) -> float:
    """A reply's summed log-probability through the SFT loss: minus the mean token loss times its tokens."""
    encoded = encode_rows([{"prompt": prompt, "completion": reply}], "completion", tokenizer, chat_template=False,
                          train_on_prompt=False, max_len=256)  # fmt: skip
    example = encoded.examples[0]
    return -evaluate_loss(model, [example], 1, tokenizer.pad_token_id, "cpu") * loss_tokens(example.labels)


def test_eval_reports_pair_accuracy_and_margin_of_the_bare_base(tiny_model_dir, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    code, lines = run("eval", "--data", data, "--model", tiny_model_dir, "--no-chat", "--device", "cpu", "--json")
    assert code == 0, lines
    result = json.loads("\n".join(lines))
    loaded = load_model(tiny_model_dir)
    margins = [
        reply_logp(loaded.model, loaded.tokenizer, r["prompt"], r["chosen"])
        - reply_logp(loaded.model, loaded.tokenizer, r["prompt"], r["rejected"])
        for r in PAIRS
    ]
    assert result["pairs"] == 3 and "loss" not in result and "bleu" not in result
    assert result["pair_accuracy"] == pytest.approx(sum(m > 0 for m in margins) / 3)
    assert result["pair_margin"] == pytest.approx(sum(margins) / 3, rel=1e-4)
