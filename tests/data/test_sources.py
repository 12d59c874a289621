"""Data from anywhere (solo_cli/data/sources.py, columns.py, checks.py): every source kind, column
mapping, and bad rows named by their row and column."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hub_cache import prefill_hub_cache
from support import write_jsonl

from solo_cli.data.sources import load_source
from solo_cli.data.spec import DataSpec
from solo_cli.errors import UsageError

PC = [{"prompt": f"name[Place {i}] ->", "completion": f" Place {i} is a cheap pub."} for i in range(6)]
CHAT = [{"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": f"hello {i}"}]} for i in range(3)]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """datasets caches under the test's tmp folder, never the user's ~/.cache/huggingface."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    return tmp_path / "hf-datasets"


def load(data, **kwargs):
    return load_source(DataSpec(data, **kwargs))


def error(data, **kwargs) -> str:
    with pytest.raises(UsageError) as info:
        load(data, **kwargs)
    return info.value.message


def parquet(path, rows):
    pd.DataFrame(rows).to_parquet(path)
    return path


# --- JSONL: today's rows and today's file:line errors -----------------------------------------


def test_jsonl_file_gives_its_rows(tmp_path):
    rows = PC + [{"prompt": "p", "completion": "c", "references": ["c"]}]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    source = load(path)
    assert source.train.fmt == "completion" and source.valid is None
    assert list(source.train.rows()) == rows
    assert source.train.where(2) == f"{path}:3"


def test_jsonl_bad_line_keeps_its_file_line_message(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", PC)
    path.write_text(path.read_text() + '{"prompt": 3, "completion": "x"}\n')
    assert error(path) == f'{path}:7, key "prompt": expected a string, got int (3); store text there, or drop the row'


def test_jsonl_folder_with_splits(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", PC)
    write_jsonl(tmp_path / "valid.jsonl", PC[:2])
    write_jsonl(tmp_path / "test.jsonl", PC[:1])
    source = load(tmp_path)
    assert (len(source.train), len(source.valid), len(source.test)) == (6, 2, 1)


def test_folder_without_train_keeps_its_message(tmp_path):
    assert error(tmp_path) == f"data {tmp_path}: the folder has no train.jsonl; add one or pass a .jsonl file"


def test_missing_path_keeps_its_message(tmp_path):
    assert "no such file or folder; pass a .jsonl file" in error(tmp_path / "nope.jsonl")


# --- JSON, CSV, Parquet files and folders -------------------------------------------------------


def test_json_array_file(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(PC))
    assert list(load(path).train.rows()) == PC


def test_json_lines_in_a_json_file_stay_with_the_jsonl_reader(tmp_path):
    path = write_jsonl(tmp_path / "train.json", PC)
    assert load(path).train.where(0) == f"{path}:1"


def test_csv_cells_are_text_and_blank_completions_are_named(tmp_path):
    path = tmp_path / "train.csv"
    pd.DataFrame({"prompt": ["007", "NA", ""], "completion": [" a", " None", " c"]}).to_csv(path, index=False)
    rows = list(load(path).train.rows())
    assert rows == [
        {"prompt": "007", "completion": " a"},
        {"prompt": "NA", "completion": " None"},
        {"prompt": "", "completion": " c"},
    ]
    pd.DataFrame({"prompt": ["a", "b"], "completion": ["x", ""]}).to_csv(path, index=False)
    assert error(path) == f'{path} row 2, column "completion": the completion is empty; fill it in or drop the row'


def test_tsv_file(tmp_path):
    path = tmp_path / "train.tsv"
    pd.DataFrame({"text": ["a, b", "c"]}).to_csv(path, index=False, sep="\t")
    assert list(load(path).train.rows()) == [{"text": "a, b"}, {"text": "c"}]


def test_parquet_file_drops_columns_no_format_uses(tmp_path):
    path = parquet(tmp_path / "train.parquet", [r | {"id": n} for n, r in enumerate(PC)])
    source = load(path)
    assert source.train.dataset.column_names == ["prompt", "completion"]
    assert list(source.train.rows()) == PC


def test_parquet_null_names_row_and_column(tmp_path):
    path = parquet(tmp_path / "train.parquet", PC[:2] + [{"prompt": "p", "completion": None}])
    assert error(path) == f'{path} row 3, column "completion": expected a string, got null; fill it in or drop the row'


def test_parquet_wrong_type_names_the_mapped_column(tmp_path):
    path = parquet(tmp_path / "train.parquet", [{"question": "q", "answer": 7}])
    message = error(path, prompt_column="question", completion_column="answer")
    assert message.startswith(f'{path} row 1, column "answer": expected a string, got int (7); store text there')


def test_folder_of_mixed_files_with_splits(tmp_path):
    parquet(tmp_path / "train.parquet", PC)
    pd.DataFrame(PC[:2]).to_csv(tmp_path / "validation.csv", index=False)
    (tmp_path / "test.json").write_text(json.dumps(PC[:1]))
    source = load(tmp_path)
    assert (len(source.train), len(source.valid), len(source.test)) == (6, 2, 1)
    assert source.valid.name == str(tmp_path / "validation.csv")


def test_folder_with_two_files_for_one_split(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", PC)
    parquet(tmp_path / "train.parquet", PC)
    assert "train.jsonl and train.parquet are both the train split; keep one" in error(tmp_path)


def test_valid_rows_of_another_format_are_refused(tmp_path):
    parquet(tmp_path / "train.parquet", PC)
    parquet(tmp_path / "valid.parquet", [{"text": "t"}])
    assert "its rows are 'text' but the training rows are 'completion'" in error(tmp_path)


# --- save_to_disk folders -----------------------------------------------------------------------


def test_save_to_disk_dataset(tmp_path):
    from datasets import Dataset

    Dataset.from_list(PC).save_to_disk(tmp_path / "saved")
    assert list(load(tmp_path / "saved").train.rows()) == PC
    assert "holds one Dataset, not a DatasetDict" in error(tmp_path / "saved", valid_split="validation")


def test_save_to_disk_dataset_dict_splits(tmp_path):
    from datasets import Dataset, DatasetDict

    splits = {"train": PC, "validation": PC[:2], "test": PC[:1], "extra": PC[:3]}
    DatasetDict({k: Dataset.from_list(v) for k, v in splits.items()}).save_to_disk(tmp_path / "saved")
    source = load(tmp_path / "saved")
    assert (len(source.train), len(source.valid), len(source.test)) == (6, 2, 1)
    assert source.train.name == f"{tmp_path / 'saved'}[train]"
    source = load(tmp_path / "saved", data_split="extra", valid_split="test")
    assert (len(source.train), len(source.valid)) == (3, 1)
    message = error(tmp_path / "saved", data_split="nope")
    assert (
        message
        == f"data_split nope: {tmp_path / 'saved'} has no such split; its splits are ['train', 'validation', 'test', 'extra']"
    )


# --- column mapping -----------------------------------------------------------------------------


def test_prompt_and_completion_columns(tmp_path):
    path = parquet(tmp_path / "train.parquet", [{"question": r["prompt"], "answer": r["completion"], "text": "x"} for r in PC])
    source = load(path, prompt_column="question", completion_column="answer")
    assert source.train.fmt == "completion" and list(source.train.rows()) == PC
    assert source.train.origin == {"prompt": "question", "completion": "answer"}


def test_swapped_columns(tmp_path):
    path = parquet(tmp_path / "train.parquet", [{"prompt": r["completion"], "completion": r["prompt"]} for r in PC])
    assert list(load(path, prompt_column="completion", completion_column="prompt").train.rows()) == PC


def test_text_column(tmp_path):
    path = parquet(tmp_path / "train.parquet", [{"body": "hello world", "title": "t"}])
    assert list(load(path, text_column="body").train.rows()) == [{"text": "hello world"}]


def test_messages_column_and_bad_message(tmp_path):
    path = parquet(tmp_path / "train.parquet", [{"conversation": r["messages"]} for r in CHAT])
    source = load(path, messages_column="conversation")
    assert source.train.fmt == "chat" and list(source.train.rows()) == CHAT
    bad = CHAT[:1] + [{"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}]
    path = parquet(tmp_path / "train.parquet", [{"conversation": r["messages"]} for r in bad])
    assert error(path, messages_column="conversation") == (
        f'{path} row 2, column "conversation": message 1 needs a role in '
        "['assistant', 'system', 'tool', 'user'] and a string content; got role 'robot'"
    )


def test_unknown_column_lists_the_columns(tmp_path):
    path = parquet(tmp_path / "train.parquet", PC)
    assert (
        error(path, text_column="body") == f"text_column body: no such column in {path}; its columns are ['prompt', 'completion']"
    )


def test_columns_of_two_formats_are_refused(tmp_path):
    path = parquet(tmp_path / "train.parquet", [r | {"text": "t"} for r in PC])
    assert "fit more than one row format (completion, text)" in error(path)
    assert "fields of different row formats" in error(path, text_column="text", prompt_column="prompt")
    assert load(path, text_column="text").train.fmt == "text"


def test_columns_of_no_format_say_how_to_map_them(tmp_path):
    path = parquet(tmp_path / "train.parquet", [{"question": "q", "answer": "a"}])
    assert "hold no rows solo knows; choose the columns with text_column" in error(path)


def test_a_split_for_one_file_is_refused(tmp_path):
    path = parquet(tmp_path / "train.parquet", PC)
    assert error(path, valid_split="validation").startswith("valid_split: ")


# --- a Hub dataset id, offline, from the datasets cache --------------------------------------


def test_hub_id_offline_from_the_datasets_cache(tmp_path, datasets_cache):
    splits = {"train": [{"q": r["prompt"], "a": r["completion"]} for r in PC], "validation": [{"q": "v", "a": " w"}]}
    prefill_hub_cache(datasets_cache, tmp_path, "solo-test/e2e-tiny", "0123456789abcdef0123456789abcdef01234567", splits)
    script = (
        "from solo_cli.data.sources import load_source; from solo_cli.data.spec import DataSpec\n"
        "from solo_cli.errors import UsageError\n"
        "s = load_source(DataSpec('solo-test/e2e-tiny', prompt_column='q', completion_column='a'))\n"
        "print(s.train.name, len(s.train), s.valid.name, len(s.valid), s.train.fmt)\n"
        "for kw in ({'data': 'solo-test/absent'}, {'data': 'solo-test/e2e-tiny', 'data_split': 'nope'}):\n"
        "    try:\n        load_source(DataSpec(**kw))\n    except UsageError as exc:\n        print(exc.message)\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_DATASETS_CACHE": str(datasets_cache)}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "solo-test/e2e-tiny[train] 6 solo-test/e2e-tiny[validation] 1 completion"
    assert lines[1].startswith("data solo-test/absent: no such file or folder, nor a Hub dataset in the datasets cache")
    assert lines[2] == "data_split nope: solo-test/e2e-tiny has no such split; its splits are ['train', 'validation']"
    assert "Generating" not in out.stderr and "Using the latest cached" not in out.stderr  # the engine never prints
