"""The row formats (solo_cli/data/formats.py): one description, and one set of checks whose words are the same
for a JSON row (``file:line, key "x"``) and a table row (``file row N, column "x"``)."""

import json

import pandas as pd
import pytest

from solo_cli.data import formats
from solo_cli.data.sources import load_source
from solo_cli.data.spec import DataSpec
from solo_cli.errors import UsageError

CHAT_OK = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def test_each_format_names_its_fields_trained_field_and_arrow_columns():
    assert {name: (f.required, f.optional, f.trained) for name, f in formats.FORMATS.items()} == {
        "text": (("text",), (), ("text",)),
        "completion": (("prompt", "completion"), ("references",), ("completion",)),
        "chat": (("messages",), (), ()),
        "prompt": (("prompt",), ("references",), ("prompt",)),
        "preference": (("prompt", "chosen", "rejected"), (), ("chosen", "rejected")),
        "chat-preference": (("prompt", "chosen", "rejected"), (), ("chosen", "rejected")),
    }
    assert list(formats.COMPLETION.features(("__line__", "int64"))) == ["prompt", "completion", "references", "__line__"]
    assert formats.fitting({"prompt", "references"}) == [formats.PROMPT]
    assert formats.fitting({"id", "prompt", "completion"}) == [formats.COMPLETION]  # extra keys are ignored
    assert formats.fitting({"prompt", "chosen", "rejected"}) == [formats.PREFERENCE]
    assert formats.fitting({"text", "prompt", "completion"}) == [formats.TEXT, formats.COMPLETION]  # two formats' keys
    assert formats.conversational(formats.PREFERENCE, [{"role": "user", "content": "q"}]) is formats.CHAT_PREFERENCE
    assert formats.by_columns(["prompt", "completion", "id"]) == [formats.COMPLETION]
    assert formats.by_columns(["prompt", "chosen", "rejected"]) == [formats.PREFERENCE]
    assert not formats.PROMPT.trainable and formats.CHAT_PREFERENCE.pairs and not formats.COMPLETION.pairs


def _message(tmp_path, suffix: str, rows: list[dict]) -> str:
    path = tmp_path / f"train.{suffix}"
    if suffix == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == "json":
        path.write_text(json.dumps(rows))
    else:
        pd.DataFrame(rows).to_parquet(path)
    with pytest.raises(UsageError) as info:
        load_source(DataSpec(path))
    where, _, what = info.value.message.partition(": ")
    return what


@pytest.mark.parametrize(
    "rows, what",
    [
        ([{"prompt": "p", "completion": " c"}, {"prompt": "p", "completion": " "}], "the completion is empty; fill it in"),
        ([{"prompt": "p", "completion": " c"}, {"prompt": "p", "completion": None}], "expected a string, got null; fill it in"),
        ([{"text": 7}, {"text": 8}], "expected a string, got int (7); store text there"),
        ([{"messages": CHAT_OK}, {"messages": CHAT_OK[1:]}], "message 0 is an assistant turn"),
        ([{"messages": CHAT_OK}, {"messages": CHAT_OK[:1]}], "no assistant message"),
        ([{"prompt": "p", "references": ["r"]}, {"prompt": "p", "references": []}], "expected a non-empty list of strings"),
    ],
)
def test_json_and_table_rows_meet_the_same_checks_in_the_same_words(tmp_path, rows, what):
    messages = {suffix: _message(tmp_path, suffix, rows) for suffix in ("jsonl", "json", "parquet")}
    assert len(set(messages.values())) == 1, messages
    assert what in messages["jsonl"]


def test_a_row_is_named_where_it_is(tmp_path):
    rows = [{"prompt": "p", "completion": " c"}, {"prompt": "p", "completion": ""}]
    for suffix, where in [("jsonl", ":2, key"), ("json", " row 2, key"), ("parquet", " row 2, column")]:
        path = tmp_path / f"train.{suffix}"
        if suffix == "parquet":
            pd.DataFrame(rows).to_parquet(path)
        else:
            path.write_text(json.dumps(rows) if suffix == "json" else "".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(UsageError) as info:
            load_source(DataSpec(path))
        assert info.value.message.startswith(f'{path}{where} "completion": the completion is empty')
