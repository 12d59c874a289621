"""Preference pairs through the one data path: every source, the same checks, each reply scored on its own tokens."""

import pytest
from support import encode_rows, write_rows

from solo_cli.data.formats import turn_text
from solo_cli.data.pairs import collate_pairs
from solo_cli.data.sources import load_source
from solo_cli.data.spec import DataSpec
from solo_cli.data.split_encoding import encode_rowset
from solo_cli.errors import UsageError

ROWS = [{"prompt": f"name[Place {i}]", "chosen": f" Place {i} is a pub.", "rejected": f" Place {i} is a cafe."} for i in range(3)]
USER = {"role": "user", "content": "name[The Eagle]"}


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def encoded(path, tokenizer, chat_template=None, **columns):
    rows = load_source(DataSpec(path, **columns)).train
    return rows, encode_rowset(rows, tokenizer, chat_template=chat_template, train_on_prompt=False, max_len=256)


def scored(tokenizer, example) -> str:
    return tokenizer.decode([i for i, label in zip(example.input_ids, example.labels) if label != -100])


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_text_pairs_read_alike_from_every_source_and_score_only_their_replies(tmp_path, tokenizer, suffix):
    rows, data = encoded(write_rows(tmp_path / f"train{suffix}", ROWS), tokenizer, chat_template=False)
    assert rows.fmt == "preference" and len(data.examples) == 3 and data.stats["examples"] == 3
    pair = data.examples[1]
    # the reply and the EOS solo appends without a template; the loss never reads the prompt
    assert scored(tokenizer, pair.chosen) == " Place 1 is a pub.<|im_end|>"
    assert scored(tokenizer, pair.rejected) == " Place 1 is a cafe.<|im_end|>"
    # each side is the completion row supervised training would train on, tokens and mask alike
    for side in ("chosen", "rejected"):
        rows = [{"prompt": r["prompt"], "completion": r[side]} for r in ROWS]
        sft = encode_rows(rows, "completion", tokenizer, chat_template=False, train_on_prompt=False, max_len=256).examples
        assert [getattr(p, side) for p in data.examples] == sft


def test_conversational_pairs_score_the_last_assistant_turn_only_whether_a_string_or_a_message(tmp_path, tokenizer):
    earlier = [USER, {"role": "assistant", "content": "Which one?"}, {"role": "user", "content": "The cheap one."}]
    rows = [
        {"prompt": earlier, "chosen": "The Eagle is cheap.", "rejected": [{"role": "assistant", "content": "It is dear."}]},
        {"prompt": [USER], "chosen": [{"role": "assistant", "content": "A pub."}], "rejected": "A cafe."},
    ]
    found, data = encoded(write_rows(tmp_path / "train.jsonl", rows), tokenizer)
    assert found.fmt == "chat-preference" and data.chat_template
    first = data.examples[0]
    assert scored(tokenizer, first.chosen) == "The Eagle is cheap.<|im_end|>\n"  # not "Which one?": a prompt turn
    assert scored(tokenizer, first.rejected) == "It is dear.<|im_end|>\n"
    assert "Which one?" in tokenizer.decode(first.chosen.input_ids)
    # a table's column holds one kind: replies as strings in one column, as messages in the other
    table = [
        r | {"chosen": turn_text(r["chosen"]), "rejected": [{"role": "assistant", "content": turn_text(r["rejected"])}]}
        for r in rows
    ]
    parquet, again = encoded(write_rows(tmp_path / "train.parquet", table), tokenizer)
    assert parquet.fmt == "chat-preference"
    assert [p.rejected.labels for p in again.examples] == [p.rejected.labels for p in data.examples]


def test_a_batch_of_pairs_puts_the_chosen_replies_first(tmp_path, tokenizer):
    _, data = encoded(write_rows(tmp_path / "train.jsonl", ROWS), tokenizer)
    pairs = list(data.examples)
    batch = collate_pairs(pairs[:2], tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 4 and "reference_logps" not in batch
    assert batch["input_ids"][2, : len(pairs[0].rejected.input_ids)].tolist() == pairs[0].rejected.input_ids
    with_reference = data.examples.with_references(__import__("torch").tensor([[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0]]))
    assert with_reference[1].reference == (-3.0, -4.0) and with_reference[1:][0].reference == (-3.0, -4.0)
    assert collate_pairs(list(with_reference[:2]), 0)["reference_logps"].tolist() == [[-1.0, -2.0], [-3.0, -4.0]]


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"chosen": "   "}, 'key "chosen": the chosen is empty'),
        ({"rejected": None}, 'key "rejected": expected a string, got null; fill it in'),
    ],
)
def test_bad_text_pairs_meet_one_line_errors_in_the_same_words_from_json_and_tables(tmp_path, bad, message):
    rows = [ROWS[0], ROWS[1] | bad]
    for suffix, where in ((".jsonl", ":2, "), (".parquet", " row 2, ")):
        path = write_rows(tmp_path / f"train{suffix}", rows)
        with pytest.raises(UsageError) as info:
            load_source(DataSpec(path))
        text = message if suffix == ".jsonl" else message.replace("key", "column")
        assert info.value.message.startswith(str(path) + where) and __import__("re").search(text, info.value.message)
        assert "\n" not in info.value.message


@pytest.mark.parametrize(
    "row, message",
    [
        (
            {"prompt": [USER, {"role": "assistant", "content": "x"}], "chosen": "a", "rejected": "b"},
            "ends with an assistant turn",
        ),
        ({"prompt": [USER], "chosen": [USER], "rejected": "b"}, 'key "chosen": expected the reply'),
        ({"prompt": [USER], "chosen": "a", "rejected": [{"role": "assistant", "content": " "}]}, "the reply is empty"),
    ],
)
def test_bad_conversational_pairs_are_refused_naming_the_line(tmp_path, row, message):
    path = write_rows(tmp_path / "train.jsonl", [row])
    with pytest.raises(UsageError, match=rf"train\.jsonl:1, .*{message}"):
        load_source(DataSpec(path))


def test_columns_map_to_pairs_with_chosen_and_rejected_column(tmp_path, tokenizer):
    rows = [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in ROWS]
    spec = dict(prompt_column="question", chosen_column="good", rejected_column="bad")
    for suffix in (".csv", ".jsonl"):
        found, data = encoded(write_rows(tmp_path / f"qa{suffix}", rows), tokenizer, chat_template=False, **spec)
        assert found.fmt == "preference" and found.origin == {"prompt": "question", "chosen": "good", "rejected": "bad"}
        assert scored(tokenizer, data.examples[0].chosen) == " Place 0 is a pub.<|im_end|>"
