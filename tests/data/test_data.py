"""Reading, checking and tokenizing training rows (solo_cli/data/rows.py, row_encoding.py), through the loading and encoding path training takes."""

import json

import pytest
import torch
from support import encode_rows, read_rows, write_jsonl
from tiny import make_tokenizer

from solo_cli.data.row_encoding import Example, collate, uses_chat_template
from solo_cli.errors import UsageError

PROMPT = "name[Place 1] ->"
COMPLETION = " Place 1 is a cheap pub."
PC_ROW = {"prompt": PROMPT, "completion": COMPLETION}
SYSTEM = "Describe the place."
IM_END = "<|im_end|>"


def trained_runs(example: Example, tokenizer) -> list[str]:
    """The decoded text of each contiguous run of tokens that carries loss."""
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels, strict=True):
        if label != -100:
            assert label == token, "a trained label must equal its input id"
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def masked_text(example: Example, tokenizer) -> str:
    return tokenizer.decode([t for t, lab in zip(example.input_ids, example.labels, strict=True) if lab == -100])


def encode_one(row, fmt, tokenizer, *, chat_template=None, train_on_prompt=False, max_len=512):
    data = encode_rows([row], fmt, tokenizer, chat_template=chat_template, train_on_prompt=train_on_prompt, max_len=max_len)
    assert len(data.examples) == 1
    return data.examples[0]


def read_error(path) -> str:
    """Read a file that must fail, and return the UsageError's message."""
    with pytest.raises(Exception) as info:
        read_rows(path)
    assert isinstance(info.value, UsageError), f"expected a UsageError, got {type(info.value).__name__}: {info.value}"
    return str(info.value)


# --- read_rows: the three formats ------------------------------------------------------------


def test_read_text_rows(tmp_path):
    rows = [{"text": "hello world"}, {"text": "the quick brown fox"}]
    assert read_rows(write_jsonl(tmp_path / "train.jsonl", rows)) == (rows, "text")


def test_read_prompt_completion_rows(tmp_path):
    rows = [PC_ROW, {"prompt": "", "completion": "anything"}]
    assert read_rows(write_jsonl(tmp_path / "train.jsonl", rows)) == (rows, "completion")


def test_read_prompt_completion_rows_with_references(tmp_path):
    rows = [{"prompt": "p", "completion": "c", "references": ["c", "c2"]}, {"prompt": "q", "completion": "d"}]
    assert read_rows(write_jsonl(tmp_path / "train.jsonl", rows)) == (rows, "completion")


def test_read_messages_rows(tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "tool", "content": "c"},
                {"role": "assistant", "content": "d"},
            ]
        },
    ]
    assert read_rows(write_jsonl(tmp_path / "train.jsonl", rows)) == (rows, "chat")


def test_read_accepts_crlf_and_no_final_newline(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"text": "a"}\r\n{"text": "b"}')
    assert read_rows(path) == ([{"text": "a"}, {"text": "b"}], "text")


# --- read_rows: file-level problems ------------------------------------------------------------


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("")
    assert "train.jsonl: the file has no rows" in read_error(path)


def test_file_of_blank_lines_is_an_error(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n   \n\t\n")
    assert "has no rows" in read_error(path)


def test_blank_lines_are_skipped_but_counted(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('\n{"text": "a"}\n   \n\n{"text": "b"}\n\n')
    assert read_rows(path) == ([{"text": "a"}, {"text": "b"}], "text")
    # Line numbers in errors are physical lines, blank ones included.
    path.write_text('{"text": "a"}\n\n\n{"text": 3}\n')
    with pytest.raises(UsageError, match=r'train\.jsonl:4, key "text": expected a string, got int \(3\)'):
        read_rows(path)


def test_missing_file(tmp_path):
    with pytest.raises(UsageError, match=r"nope\.jsonl: no such file or folder"):
        read_rows(tmp_path / "nope.jsonl")


def test_line_that_is_not_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "ok"}\n{"text": oops}\n')
    with pytest.raises(UsageError, match=r"train\.jsonl:2:10: not valid JSON"):
        read_rows(path)


def test_truncated_json_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"text": "ok"}\n{"text": "ok"}\n{"text": "o\n')
    with pytest.raises(UsageError, match=r"train\.jsonl:3:\d+: not valid JSON"):
        read_rows(path)


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(UsageError, match=r"train\.jsonl:3: not UTF-8"):
        read_rows(path)


def test_utf8_text_is_read(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": "Café Adriatic — ünïcödé 日本"}])
    assert read_rows(path)[0][0]["text"] == "Café Adriatic — ünïcödé 日本"


def test_unicode_line_separators_inside_strings_are_not_line_breaks(tmp_path):
    rows = [{"text": "first\u2028second"}, {"text": "next\x85line"}, {"text": "para\u2029graph"}]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    try:
        result = read_rows(path)
    except UsageError as exc:
        pytest.fail(f"a valid JSONL file with U+2028/U+0085 inside a string was rejected: {exc}")
    assert result == (rows, "text")


# --- read_rows: row-level problems -------------------------------------------------------------


@pytest.mark.parametrize(
    "row, message",
    [
        ([1, 2], "expected a JSON object, got list"),
        ("text", "expected a JSON object, got str"),
        ({"prompt": "p", "references": "not a list"}, 'key "references": expected a non-empty list of strings, got str'),
        ({"completion": "c"}, "match no format"),
        ({"id": 1, "source": "x"}, r"keys \['id', 'source'\] match no format"),
        ({}, r"keys \[\] match no format"),
        ({"prompt": "p", "completion": "c", "text": "t"}, "mix the fields of text and completion rows"),
        ({"messages": [], "text": "t"}, "mix the fields of text and chat rows"),
        ({"prompt": "p", "completion": "c", "chosen": "a", "rejected": "b"}, "mix the fields of completion and preference"),
    ],
)
def test_unknown_or_missing_keys(tmp_path, row, message):
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": "fine"}, row])
    with pytest.raises(UsageError, match=rf"train\.jsonl:2[:,] .*{message}"):
        read_rows(path)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"text": 5}, r'key "text": expected a string, got int \(5\)'),
        ({"text": None}, 'key "text": expected a string, got null; fill it in'),
        ({"prompt": ["p"], "completion": "c"}, 'key "prompt": expected a string, got list'),
        ({"prompt": "p", "completion": True}, r'key "completion": expected a string, got bool \(True\)'),
        ({"messages": "hi"}, 'key "messages": expected a non-empty list'),
        ({"messages": []}, 'key "messages": expected a non-empty list .* got an empty list'),
        ({"messages": ["hi"]}, 'key "messages": message 0 must be an object with exactly "role" and "content"'),
        ({"messages": [{"role": "user"}]}, 'message 0 must be an object with exactly "role" and "content"'),
        (
            {"messages": [{"role": "user", "content": "a", "name": "x"}, {"role": "assistant", "content": "b"}]},
            'message 0 must be an object with exactly "role" and "content"',
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": 7}]},
            r"message 1 needs a role .* and a string content; got content int \(7\)",
        ),
    ],
)
def test_wrong_types(tmp_path, row, message):
    path = write_jsonl(tmp_path / "train.jsonl", [row])
    with pytest.raises(
        UsageError, match=rf"train\.jsonl:1, {message}" if message.startswith("key") else rf"train\.jsonl:1, .*{message}"
    ):
        read_rows(path)


@pytest.mark.parametrize(
    "row, key",
    [
        ({"prompt": "p", "completion": ""}, "completion"),
        ({"prompt": "p", "completion": "  \n "}, "completion"),
        ({"text": ""}, "text"),
        ({"text": "   "}, "text"),
    ],
)
def test_empty_trained_field(tmp_path, row, key):
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": "x"}, {"text": "y"}, row] if key == "text" else [PC_ROW, PC_ROW, row])
    with pytest.raises(UsageError, match=rf'train\.jsonl:3, key "{key}": the {key} is empty; fill it in or drop the row'):
        read_rows(path)


def test_messages_without_assistant_turn(tmp_path):
    row = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "hi"}]}
    path = write_jsonl(tmp_path / "train.jsonl", [row])
    with pytest.raises(UsageError, match=r'train\.jsonl:1, key "messages": no assistant message'):
        read_rows(path)


def test_bad_role(tmp_path):
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    bad = {"messages": [{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}]}
    path = write_jsonl(tmp_path / "train.jsonl", [good, bad])
    with pytest.raises(
        UsageError,
        match=r"train\.jsonl:2, key \"messages\": message 1 needs a role in \['assistant', 'system', 'tool', 'user'\].*got role 'bot'",
    ):
        read_rows(path)


def test_unhashable_role_is_a_usage_error(tmp_path):
    row = {"messages": [{"role": ["user"], "content": "a"}, {"role": "assistant", "content": "b"}]}
    message = read_error(write_jsonl(tmp_path / "train.jsonl", [row]))
    assert 'train.jsonl:1, key "messages": message 0 needs a role' in message


def test_mixed_formats_name_the_line(tmp_path):
    rows = [{"text": "a"}, {"text": "b"}, PC_ROW]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(UsageError, match=r"train\.jsonl:3: a 'completion' row in a file of 'text' rows \(line 1\)"):
        read_rows(path)


def test_mixed_formats_first_line_is_the_first_row_not_the_first_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(
        '\n\n{"prompt": "p", "completion": "c"}\n'
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}]}\n'
    )
    with pytest.raises(UsageError, match=r"train\.jsonl:4: a 'chat' row in a file of 'completion' rows \(line 3\)"):
        read_rows(path)


def test_prompt_and_references_rows_can_be_read(tmp_path):
    rows = [{"prompt": "name[Blue Spice]", "references": ["Blue Spice is a pub.", "A pub: Blue Spice."]}]
    path = write_jsonl(tmp_path / "test.jsonl", rows)
    try:
        read, _ = read_rows(path)
    except UsageError as exc:
        pytest.fail(f"prompt/references rows (the E2E test split's format) are rejected: {exc}")
    assert read == rows


# --- uses_chat_template ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_tokenizer():
    return make_tokenizer(chat=False)


@pytest.mark.parametrize("flag", [None, True, False])
def test_text_rows_never_use_the_template(tokenizer, plain_tokenizer, flag):
    assert uses_chat_template("text", tokenizer, flag) is False
    assert uses_chat_template("text", plain_tokenizer, flag) is False


@pytest.mark.parametrize("flag", [None, True, False])
def test_chat_rows_always_use_the_template(tokenizer, flag):
    assert uses_chat_template("chat", tokenizer, flag) is True


def test_chat_rows_need_a_template(plain_tokenizer):
    with pytest.raises(UsageError, match="chat rows need a tokenizer with a chat template"):
        uses_chat_template("chat", plain_tokenizer, None)


def test_completion_rows_follow_the_tokenizer_and_flag(tokenizer, plain_tokenizer):
    assert uses_chat_template("completion", tokenizer, None) is True
    assert uses_chat_template("completion", tokenizer, True) is True
    assert uses_chat_template("completion", tokenizer, False) is False
    assert uses_chat_template("completion", plain_tokenizer, None) is False
    assert uses_chat_template("completion", plain_tokenizer, True) is False
    assert uses_chat_template("completion", plain_tokenizer, False) is False


def test_encode_rows_chat_without_template(plain_tokenizer):
    row = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    with pytest.raises(UsageError, match="chat template"):
        encode_rows([row], "chat", plain_tokenizer, chat_template=None, train_on_prompt=False, max_len=64)


# --- encode: prompt/completion without the template ---------------------------------------------


def test_completion_without_template_masks_exactly_the_prompt(tokenizer):
    data = encode_rows([PC_ROW], "completion", tokenizer, chat_template=False, train_on_prompt=False, max_len=512)
    assert data.chat_template is False and data.fmt == "completion"
    example = data.examples[0]
    prompt_ids = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(PROMPT + COMPLETION)["input_ids"]
    n = len(prompt_ids)
    # The prompt ends on a token boundary here, so its tokens are a prefix of the whole text's.
    assert full_ids[:n] == prompt_ids
    assert example.input_ids == full_ids + [tokenizer.eos_token_id]
    assert example.labels[:n] == [-100] * n
    assert example.labels[n:] == example.input_ids[n:]


def test_completion_without_template_appends_and_trains_eos(tokenizer):
    example = encode_one(PC_ROW, "completion", tokenizer, chat_template=False)
    assert example.input_ids[-1] == tokenizer.eos_token_id
    assert example.labels[-1] == tokenizer.eos_token_id
    assert trained_runs(example, tokenizer) == [COMPLETION + tokenizer.eos_token]
    assert masked_text(example, tokenizer) == PROMPT


def test_completion_with_empty_prompt_trains_everything(tokenizer):
    example = encode_one({"prompt": "", "completion": COMPLETION}, "completion", tokenizer, chat_template=False)
    assert example.labels == example.input_ids
    assert tokenizer.decode(example.input_ids) == COMPLETION + IM_END


# --- encode: with the chat template -------------------------------------------------------------


def test_completion_with_template_trains_only_the_assistant_turn(tokenizer):
    data = encode_rows([PC_ROW], "completion", tokenizer, chat_template=None, train_on_prompt=False, max_len=512)
    assert data.chat_template is True
    example = data.examples[0]
    messages = [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": COMPLETION}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert example.input_ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    # No extra EOS: the template's <|im_end|> closes the turn.
    assert tokenizer.decode(example.input_ids) == rendered
    assert trained_runs(example, tokenizer) == [COMPLETION + IM_END + "\n"]
    assert masked_text(example, tokenizer) == f"<|im_start|>user\n{PROMPT}{IM_END}\n<|im_start|>assistant\n"


def test_chat_row_masks_system_and_user(tokenizer):
    row = {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPT},
            {"role": "assistant", "content": COMPLETION},
        ]
    }
    example = encode_one(row, "chat", tokenizer)
    assert trained_runs(example, tokenizer) == [COMPLETION + IM_END + "\n"]
    masked = masked_text(example, tokenizer)
    assert masked == f"<|im_start|>system\n{SYSTEM}{IM_END}\n<|im_start|>user\n{PROMPT}{IM_END}\n<|im_start|>assistant\n"


def test_chat_row_with_two_exchanges_trains_both_assistant_turns(tokenizer):
    row = {
        "messages": [
            {"role": "user", "content": "name[The Eagle]"},
            {"role": "assistant", "content": "The Eagle is a pub."},
            {"role": "user", "content": "name[Blue Spice]"},
            {"role": "assistant", "content": "Blue Spice is cheap."},
        ]
    }
    example = encode_one(row, "chat", tokenizer)
    assert trained_runs(example, tokenizer) == ["The Eagle is a pub." + IM_END + "\n", "Blue Spice is cheap." + IM_END + "\n"]
    masked = masked_text(example, tokenizer)
    assert "name[The Eagle]" in masked and "name[Blue Spice]" in masked
    assert "pub" not in masked and "cheap" not in masked


def test_chat_row_with_template_is_not_given_an_extra_eos(tokenizer):
    row = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    example = encode_one(row, "chat", tokenizer)
    assert tokenizer.decode(example.input_ids) == tokenizer.apply_chat_template(row["messages"], tokenize=False)


def test_chat_row_starting_with_assistant_is_refused(tmp_path):
    # Where an opening assistant turn's header ends cannot be told from offsets (templates refuse an
    # empty conversation), so such rows are refused with advice instead of training the header.
    path = write_jsonl(
        tmp_path / "train.jsonl", [{"messages": [{"role": "assistant", "content": "Hello."}, {"role": "user", "content": "hi"}]}]
    )
    with pytest.raises(UsageError, match='train.jsonl:1, key "messages": message 0 is an assistant turn'):
        read_rows(path)


# --- encode: train_on_prompt, text rows, lengths -------------------------------------------------


@pytest.mark.parametrize("chat_template", [None, False])
def test_train_on_prompt_trains_every_token(tokenizer, chat_template):
    example = encode_one(PC_ROW, "completion", tokenizer, chat_template=chat_template, train_on_prompt=True)
    assert example.labels == example.input_ids


def test_train_on_prompt_chat(tokenizer):
    row = {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
        ]
    }
    example = encode_one(row, "chat", tokenizer, train_on_prompt=True)
    assert example.labels == example.input_ids


def test_text_rows_train_every_token_and_eos(tokenizer):
    text = "The Eagle is a French coffee shop by the riverside."
    data = encode_rows([{"text": text}], "text", tokenizer, chat_template=True, train_on_prompt=False, max_len=512)
    assert data.chat_template is False
    example = data.examples[0]
    assert example.input_ids == tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    assert example.labels == example.input_ids
    assert tokenizer.decode(example.input_ids) == text + IM_END


def test_max_len_truncates(tokenizer):
    full = encode_one(PC_ROW, "completion", tokenizer, chat_template=False)
    n_prompt = full.labels.count(-100)
    data = encode_rows([PC_ROW], "completion", tokenizer, chat_template=False, train_on_prompt=False, max_len=n_prompt + 3)
    example = data.examples[0]
    assert example.input_ids == full.input_ids[: n_prompt + 3]
    assert example.labels == full.labels[: n_prompt + 3]
    assert data.truncated == 1 and data.skipped == 0
    assert data.stats["truncated"] == 1


def test_prompt_that_fills_max_len_is_skipped(tokenizer):
    n_prompt = len(tokenizer(PROMPT, add_special_tokens=False)["input_ids"])

    def encoded(max_len):
        return encode_rows([PC_ROW], "completion", tokenizer, chat_template=False, train_on_prompt=False, max_len=max_len)

    assert encoded(n_prompt).skipped == 1 and encoded(n_prompt - 1).skipped == 1
    (kept,) = encoded(n_prompt + 1).examples
    assert sum(lab != -100 for lab in kept.labels) == 1


def test_skipped_rows_are_counted(tokenizer):
    long_row = {"prompt": "name[The Eagle], eatType[coffee shop], food[French], area[riverside] ->", "completion": " Ok."}
    short_row = {"prompt": "a", "completion": " b"}
    data = encode_rows(
        [long_row, short_row, long_row], "completion", tokenizer, chat_template=False, train_on_prompt=False, max_len=8
    )
    assert data.skipped == 2
    assert len(data.examples) == 1
    assert data.stats["rows"] == 3
    assert data.stats["examples"] == 1
    assert data.stats["skipped_prompt_too_long"] == 2


def test_train_on_prompt_never_skips(tokenizer):
    long_row = {"prompt": "name[The Eagle], eatType[coffee shop] ->", "completion": " Ok."}
    data = encode_rows([long_row], "completion", tokenizer, chat_template=False, train_on_prompt=True, max_len=4)
    assert data.skipped == 0 and len(data.examples[0].input_ids) == 4


def test_stats_count_tokens(tokenizer):
    rows = [PC_ROW, {"prompt": "a", "completion": " b"}]
    data = encode_rows(rows, "completion", tokenizer, chat_template=False, train_on_prompt=False, max_len=512)
    lengths = [len(e.input_ids) for e in data.examples]
    assert data.stats["tokens"] == sum(lengths)
    assert data.stats["max_length"] == max(lengths)
    assert data.stats["trained_tokens"] == sum(sum(lab != -100 for lab in e.labels) for e in data.examples)
    assert data.stats["truncated"] == 0


def test_row_exactly_max_len_long_is_not_counted_as_truncated(tokenizer):
    n = len(encode_one(PC_ROW, "completion", tokenizer, chat_template=False).input_ids)
    data = encode_rows([PC_ROW], "completion", tokenizer, chat_template=False, train_on_prompt=False, max_len=n)
    assert len(data.examples[0].input_ids) == n
    assert data.truncated == 0, f"an untruncated row of exactly max_len={n} tokens is counted as truncated"


# --- collate --------------------------------------------------------------------------------------


def test_collate_right_pads_and_masks_by_length():
    pad = 2  # the tiny tokenizer's pad id is its eos id: real eos tokens must stay unmasked
    short = Example([5, 6, 2], [-100, 6, 2])
    long = Example([7, 2, 8, 2, 2], [-100, -100, 8, 2, 2])
    batch = collate([short, long], pad_id=pad)
    assert set(batch) == {"input_ids", "attention_mask", "labels", "loss_positions"}
    assert all(batch[k].dtype == torch.long and batch[k].shape == (2, 5) for k in ("input_ids", "attention_mask", "labels"))
    assert batch["input_ids"].tolist() == [[5, 6, 2, pad, pad], [7, 2, 8, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 2, -100, -100], [-100, -100, 8, 2, 2]]
    # position t of row b (flattened b * 4 + t) predicts labels[b, t + 1]: the trained tokens, found on the CPU
    assert batch["loss_positions"].tolist() == [0, 1, 5, 6, 7]


def test_collate_encoded_rows(tokenizer):
    rows = [PC_ROW, {"prompt": "a", "completion": " b"}]
    data = encode_rows(rows, "completion", tokenizer, chat_template=False, train_on_prompt=False, max_len=512)
    batch = collate(data.examples, tokenizer.pad_token_id)
    lengths = [len(e.input_ids) for e in data.examples]
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths
    for n, e in enumerate(data.examples):
        assert batch["input_ids"][n, : lengths[n]].tolist() == e.input_ids
        assert batch["labels"][n, : lengths[n]].tolist() == e.labels
        assert (batch["labels"][n, lengths[n] :] == -100).all()
