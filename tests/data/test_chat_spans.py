"""Which tokens a chat row trains, under real chat-template shapes, and how many tokens a loss scores.

Each template here is a small copy of a real family's: ChatML, QwQ / DeepSeek-R1 distills (whose
generation prompt ends with ``<think>\\n`` that the rendered assistant turn lacks), Llama 3 (which
trims content), Qwen3 (an empty think block inside the turn). The trained text must be exactly the
reply plus the end of its turn, as the one encoder (``encode_rowset``, through datasets.map) masks it.
"""

import json
import shutil

import pytest
from support import assert_one_line, encode_rows, run, write_jsonl
from tiny import CHAT_TEMPLATE, make_tokenizer

from solo_cli.data.row_encoding import loss_tokens
from solo_cli.errors import UsageError

QWQ = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)
R1_DISTILL = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}<｜User｜>{{ m['content'] }}"
    "{% elif m['role'] == 'assistant' %}{% set content = m['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "<｜Assistant｜>{{ content }}<｜end▁of▁sentence｜>{% else %}{{ m['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<｜Assistant｜><think>\n{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
QWEN3 = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}<think>\n\n</think>\n\n"
    "{% endif %}{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Renders the last turn differently from the same turn once another follows: not prefix-stable.
LAST_TURN_DIFFERS = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "{% if loop.last %}<|im_end|>{% else %}<|im_sep|>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
REPLY = "The answer is four."
TURNS = [{"role": "user", "content": "What is two plus two?"}, {"role": "assistant", "content": REPLY}]


def tokenizer_with(template: str):
    tokenizer = make_tokenizer()
    tokenizer.add_tokens(SPECIAL, special_tokens=True)
    tokenizer.chat_template = template
    return tokenizer


def trained_text(example, tokenizer) -> list[str]:
    """The decoded text of each run of tokens that carries loss."""
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels, strict=True):
        if label != -100:
            current.append(token)
        elif current:
            runs, current = [*runs, current], []
    return [tokenizer.decode(r) for r in [*runs, current] if r]


def encode_chat(rows, tokenizer, train_on_prompt=False):
    return encode_rows(rows, "chat", tokenizer, chat_template=None, train_on_prompt=train_on_prompt, max_len=512)


@pytest.mark.parametrize(
    ("template", "end_of_turn"),
    [
        (CHAT_TEMPLATE, "<|im_end|>\n"),
        (QWQ, "<|im_end|>\n"),
        (R1_DISTILL, "<｜end▁of▁sentence｜>"),
        (LLAMA3, "<|eot_id|>"),
    ],
    ids=["chatml", "qwq", "r1-distill", "llama3"],
)
def test_the_trained_text_is_the_whole_reply_and_the_end_of_its_turn(template, end_of_turn):
    tokenizer = tokenizer_with(template)
    example = encode_chat([{"messages": TURNS}], tokenizer).examples[0]
    assert trained_text(example, tokenizer) == [REPLY + end_of_turn]


def test_a_generation_prompt_ending_in_think_does_not_cut_the_start_of_any_reply():
    # The case: the span started len("<think>\n") = 8 characters into every reply.
    tokenizer = tokenizer_with(QWQ)
    more = [*TURNS, {"role": "user", "content": "And three plus three?"}, {"role": "assistant", "content": "Six."}]
    expected = [REPLY + "<|im_end|>\n", "Six.<|im_end|>\n"]
    assert trained_text(encode_chat([{"messages": more}], tokenizer).examples[0], tokenizer) == expected


def test_a_reply_the_template_trims_trains_as_rendered():
    tokenizer = tokenizer_with(LLAMA3)
    turns = [TURNS[0], {"role": "assistant", "content": "  " + REPLY + "\n"}]
    assert trained_text(encode_chat([{"messages": turns}], tokenizer).examples[0], tokenizer) == [REPLY + "<|eot_id|>"]


def test_template_text_between_header_and_reply_is_trained_as_generated():
    # Qwen3 puts an empty think block in the turn, after the generation prompt: the model must write it.
    tokenizer = tokenizer_with(QWEN3)
    example = encode_chat([{"messages": TURNS}], tokenizer).examples[0]
    assert trained_text(example, tokenizer) == ["<think>\n\n</think>\n\n" + REPLY + "<|im_end|>\n"]


def test_a_reply_that_opens_with_the_generation_prompts_tail_is_trained_from_its_start():
    tokenizer = tokenizer_with(QWQ)
    reply = "<think>\nTwo and two.\n</think>\n\nFour."
    example = encode_chat([{"messages": [TURNS[0], {"role": "assistant", "content": reply}]}], tokenizer).examples[0]
    assert trained_text(example, tokenizer) == [reply + "<|im_end|>\n"]


def test_a_template_that_drops_part_of_the_reply_is_refused():
    tokenizer = tokenizer_with(R1_DISTILL)
    turns = [TURNS[0], {"role": "assistant", "content": "<think>\nTwo and two.\n</think>\n\nFour."}]
    with pytest.raises(UsageError, match=r"does not render assistant message 1 .* as written") as info:
        encode_chat([{"messages": turns}], tokenizer)
    assert "\n" not in info.value.message.replace("\\n", "") and "--chat-template" in info.value.as_flags()


def test_a_template_that_is_not_prefix_stable_is_refused_and_train_on_prompt_trains_it():
    tokenizer = tokenizer_with(LAST_TURN_DIFFERS)
    turns = [*TURNS, {"role": "user", "content": "Thanks."}]
    with pytest.raises(UsageError, match="renders earlier turns differently") as info:
        encode_chat([{"messages": turns}], tokenizer)
    assert "--train-on-prompt" in info.value.as_flags()
    example = encode_chat([{"messages": turns}], tokenizer, train_on_prompt=True).examples[0]
    assert example.labels == example.input_ids  # the advice works: every token is trained


def test_train_refuses_a_reply_the_template_drops_in_one_line(tiny_model_dir, tmp_path):
    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    (model / "chat_template.jinja").write_text(R1_DISTILL)
    turns = [TURNS[0], {"role": "assistant", "content": "<think>\nTwo and two.\n</think>\n\nFour."}]
    data = write_jsonl(tmp_path / "train.jsonl", [{"messages": turns}] * 8)
    code, lines = run("train", "--model", model, "--data", data, "--dry-run", "-o", tmp_path / "run")
    assert code == 2
    assert_one_line(lines, "assistant message 1", "</think>", "--chat-template")
    assert not (tmp_path / "run").exists()


# --- loss_tokens: position 0 is never scored ----------------------------------------------------------


def text_file(tmp_path, texts):
    return write_jsonl(tmp_path / "text.jsonl", [{"text": t} for t in texts])


TEXTS = ["The Eagle is a French coffee shop by the riverside.", "Blue Spice is a cheap pub."]


def test_a_text_example_of_n_tokens_scores_n_minus_one():
    tokenizer = make_tokenizer()
    data = encode_rows([{"text": t} for t in TEXTS], "text", tokenizer, chat_template=None, train_on_prompt=False, max_len=512)
    lengths = [len(e.input_ids) for e in data.examples]
    assert [loss_tokens(e.labels) for e in data.examples] == [n - 1 for n in lengths]
    assert data.stats["trained_tokens"] == sum(lengths) - len(lengths)  # the stats (Arrow compute) count the same


def scored(tiny_model_dir) -> int:
    """What a loss scores in TEXTS: every token and the EOS, but not the first token of each."""
    from solo_cli.engine.models import load_model

    tokenizer = load_model(tiny_model_dir).tokenizer
    return sum(len(tokenizer(t)["input_ids"]) for t in TEXTS)  # + EOS, - the first token


def test_dry_run_reports_the_scored_tokens(tiny_model_dir, tmp_path):
    data = text_file(tmp_path, TEXTS)
    code, lines = run("train", "--model", tiny_model_dir, "--data", data, "--dry-run", "--batch-size", 2, "-o", tmp_path / "run")
    assert code == 0, lines
    cells = [line.replace("│", " ").split() for line in lines]  # the data table's rows
    assert [row for row in cells if row[:2] == ["trained", "tokens"]] == [["trained", "tokens", str(scored(tiny_model_dir))]]


def test_eval_json_reports_the_scored_tokens(tiny_model_dir, tmp_path):
    code, lines = run("eval", "--model", tiny_model_dir, "--data", text_file(tmp_path, TEXTS), "--json")
    assert code == 0, lines
    assert json.loads("\n".join(lines))["loss_tokens"] == scored(tiny_model_dir)
