"""Tokenizing through datasets.map (solo_cli/data/split_encoding.py, examples.py): the examples and stats of
tokenizing one row at a time by row_encoding's rules, cached so a re-run does not tokenize again, read back
through a sequence view."""

import pytest
from support import write_jsonl

from solo_cli.data import split_encoding
from solo_cli.data.examples import ExampleView
from solo_cli.data.row_encoding import (
    EncodedData,
    collate,
    loss_tokens,
    masked,
    render,
    summarize,
    token_limit,
    uses_chat_template,
)
from solo_cli.data.sources import load_source
from solo_cli.data.spec import DataSpec
from solo_cli.data.split_encoding import encode_rowset

PC = [
    {"prompt": f"name[Place {i}] ->" * (1 + i % 4), "completion": f" Place {i} is a cheap pub." * (1 + i % 3)} for i in range(40)
]
TEXT = [{"text": f"the quick brown fox {i} " * (1 + i % 5)} for i in range(20)]
CHAT = [
    {
        "messages": [
            {"role": "system", "content": "Describe the place."},
            {"role": "user", "content": f"name[Place {i}]"},
            {"role": "assistant", "content": f"Place {i} is a pub."},
            {"role": "user", "content": "more"},
            {"role": "assistant", "content": "It is cheap." * (1 + i % 3)},
        ]
    }
    for i in range(12)
]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def one_row_at_a_time(rows, fmt, tokenizer, *, chat_template, train_on_prompt, max_len, context=None) -> EncodedData:
    """What the batched, cached encoder must give: each row rendered, tokenized alone and masked, stats from lists."""
    use_chat = uses_chat_template(fmt, tokenizer, chat_template)
    limit = token_limit(max_len, context, tokenizer)
    examples = []
    for row in rows:
        text, spans, add_eos = render(row, fmt, tokenizer, use_chat, train_on_prompt=train_on_prompt)
        enc = tokenizer(text, add_special_tokens=not use_chat, return_offsets_mapping=True)
        eos = tokenizer.eos_token_id if add_eos else None
        example = masked(enc["input_ids"], enc["offset_mapping"], spans, eos, train_on_prompt=train_on_prompt, max_len=limit)
        if example is not None:
            examples.append(example)
    lengths = [len(e.input_ids) for e in examples]
    truncated = sum(e.truncated for e in examples)
    trained = sum(loss_tokens(e.labels) for e in examples)
    stats = summarize(len(rows), len(examples), truncated, sum(lengths), trained, max(lengths, default=0))
    return EncodedData(examples, fmt, use_chat, len(rows) - len(examples), truncated, stats, limit)


def rowset(tmp_path, rows, name="train.jsonl"):
    return load_source(DataSpec(write_jsonl(tmp_path / name, rows))).train


CASES = [
    (PC, {"chat_template": None, "train_on_prompt": False, "max_len": 512}),
    (PC, {"chat_template": False, "train_on_prompt": False, "max_len": 512}),
    (PC, {"chat_template": False, "train_on_prompt": False, "max_len": 24}),  # truncated and skipped rows
    (PC, {"chat_template": None, "train_on_prompt": True, "max_len": 30}),
    (TEXT, {"chat_template": None, "train_on_prompt": False, "max_len": 40}),
    (CHAT, {"chat_template": None, "train_on_prompt": False, "max_len": 512}),
    (CHAT, {"chat_template": None, "train_on_prompt": False, "max_len": 40}),
]


@pytest.mark.parametrize(("rows", "settings"), CASES)
def test_map_encodes_exactly_as_one_row_at_a_time(tmp_path, tokenizer, rows, settings):
    data = rowset(tmp_path, rows)
    mapped = encode_rowset(data, tokenizer, **settings)
    listed = one_row_at_a_time(rows, data.fmt, tokenizer, **settings)
    assert isinstance(mapped.examples, ExampleView)
    assert list(mapped.examples) == listed.examples
    assert mapped.stats == listed.stats
    assert (mapped.fmt, mapped.chat_template, mapped.skipped, mapped.truncated, mapped.limit) == (
        listed.fmt,
        listed.chat_template,
        listed.skipped,
        listed.truncated,
        listed.limit,
    )


def test_the_context_caps_the_limit(tmp_path, tokenizer):
    mapped = encode_rowset(rowset(tmp_path, PC), tokenizer, chat_template=False, train_on_prompt=False, max_len=512, context=20)
    assert mapped.limit == 20 and max(len(e.input_ids) for e in mapped.examples) == 20


def test_parquet_rows_with_extra_struct_fields_encode_like_jsonl(tmp_path, tokenizer):
    import pandas as pd

    messages = [dict(m) for m in CHAT[0]["messages"]]
    messages[0]["name"] = "narrator"  # an extra field only one message has: null in the others
    pd.DataFrame([{"messages": CHAT[1]["messages"]}]).to_parquet(tmp_path / "train.parquet")
    data = load_source(DataSpec(tmp_path / "train.parquet")).train
    mapped = encode_rowset(data, tokenizer, chat_template=None, train_on_prompt=False, max_len=512)
    assert (
        list(mapped.examples)
        == one_row_at_a_time(CHAT[1:2], "chat", tokenizer, chat_template=None, train_on_prompt=False, max_len=512).examples
    )


def test_a_rerun_reads_the_cache_instead_of_tokenizing(tmp_path, tokenizer, monkeypatch):
    data = rowset(tmp_path, PC)
    settings = {"chat_template": None, "train_on_prompt": False, "max_len": 64}
    first = encode_rowset(data, tokenizer, **settings)
    cache_files = {f["filename"] for f in first.examples.dataset.cache_files}
    assert all(name.startswith(str(split_encoding.cache_dir())) for name in cache_files)

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(split_encoding, "render", no_tokenizing)
    reread = load_source(DataSpec(tmp_path / "train.jsonl")).train  # the file read again, as on a resume
    again = encode_rowset(reread, tokenizer, **settings)
    assert list(again.examples) == list(first.examples) and again.stats == first.stats
    with pytest.raises(AssertionError, match="tokenized again"):  # another setting is another encoding
        encode_rowset(data, tokenizer, **{**settings, "max_len": 32})


def test_an_edited_file_is_tokenized_again(tmp_path, tokenizer):
    settings = {"chat_template": False, "train_on_prompt": False, "max_len": 64}
    first = encode_rowset(rowset(tmp_path, PC), tokenizer, **settings)
    second = encode_rowset(rowset(tmp_path, PC[:5]), tokenizer, **settings)
    assert (len(first.examples), len(second.examples)) == (40, 5)


def test_num_proc_gives_the_same_examples(tmp_path, tokenizer):
    data = rowset(tmp_path, PC)
    settings = {"chat_template": False, "train_on_prompt": False, "max_len": 64}
    two = encode_rowset(data, tokenizer, num_proc=2, **settings)
    assert list(two.examples) == one_row_at_a_time(PC, "completion", tokenizer, **settings).examples


def test_example_view_is_a_sequence(tmp_path, tokenizer):
    listed = one_row_at_a_time(PC, "completion", tokenizer, chat_template=False, train_on_prompt=False, max_len=64).examples
    view = encode_rowset(rowset(tmp_path, PC), tokenizer, chat_template=False, train_on_prompt=False, max_len=64).examples
    assert len(view) == 40 and view[0] == listed[0] and view[-1] == listed[-1]
    assert list(view[:7]) == listed[:7] and list(view[1::3]) == listed[1::3] and list(view[5:][::2]) == listed[5:][::2]
    assert [view[i] for i in (3, 17, 3)] == [listed[i] for i in (3, 17, 3)]
    assert bool(view) and not view[40:]
    with pytest.raises(IndexError):
        view[40]
    batch, expected = collate(view[:4], pad_id=2), collate(listed[:4], pad_id=2)
    assert all((batch[k] == expected[k]).all() for k in expected)


def test_a_view_reads_lengths_from_its_column_as_its_examples_have_them():
    import datasets

    from solo_cli.data.examples import ExampleView

    ids = [[1] * n for n in (3, 5, 2, 7, 4)]
    ds = datasets.Dataset.from_dict({"input_ids": ids, "labels": ids, "truncated": [False] * 5})
    for view in (ExampleView(ds), ExampleView(ds)[1:], ExampleView(ds.select([4, 0, 2]))):
        assert view.lengths() == [len(e.input_ids) for e in view]
