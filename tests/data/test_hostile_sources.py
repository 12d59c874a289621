"""Hostile data files, end to end (`solo train --dry-run`): each ends in one line naming the file (and row or
line) and the fix, with exit code 2, and never in a traceback, a crash or silently other rows."""

import json

import pandas as pd
import pytest
from support import assert_one_line, run


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def dry_run(model, data, out, *flags):
    return run("train", "--model", model, "--data", data, "-o", out, "--dry-run", *flags)


def refused(model, tmp_path, path, *needles, flags=()):
    code, lines = dry_run(model, path, tmp_path / "run", *flags)
    assert code == 2, lines
    return assert_one_line(lines, *needles)


def test_an_empty_json_array(tiny_model_dir, tmp_path):
    path = tmp_path / "train.json"
    path.write_text("[]")
    refused(tiny_model_dir, tmp_path, path, f"{path}: the JSON array holds no rows; add rows")


def test_a_header_only_csv(tiny_model_dir, tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("prompt,completion\n")
    refused(tiny_model_dir, tmp_path, path, f"{path}: no rows under the header; add rows")


def test_an_empty_parquet_file(tiny_model_dir, tmp_path):
    path = tmp_path / "train.parquet"
    pd.DataFrame({"prompt": pd.Series([], dtype=str), "completion": pd.Series([], dtype=str)}).to_parquet(path)
    refused(tiny_model_dir, tmp_path, path, f"{path}: the file has no rows")


def test_an_empty_save_to_disk_folder(tiny_model_dir, tmp_path):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "saved"
    Dataset.from_dict({"prompt": [], "completion": []}).save_to_disk(folder)
    refused(tiny_model_dir, tmp_path, folder, f"{folder}: no rows; add rows")
    full = {"prompt": ["p"] * 4, "completion": [" c"] * 4}
    DatasetDict({"train": Dataset.from_dict(full), "test": Dataset.from_dict({"prompt": [], "completion": []})}).save_to_disk(
        tmp_path / "splits"
    )
    code, lines = run("eval", "--model", tiny_model_dir, "--data", tmp_path / "splits", "--no-generate")
    assert code == 2
    assert_one_line(lines, f"{tmp_path / 'splits'}[test]: no rows; add rows")


def test_a_csv_file_that_is_not_utf8_names_its_line(tiny_model_dir, tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes("prompt,completion\nfine,yes\ncaf\xe9,x\n".encode("latin-1"))
    refused(tiny_model_dir, tmp_path, path, f"{path}:3: not UTF-8", "re-save the file as UTF-8")


@pytest.mark.parametrize("first", [True, False])
def test_a_json_array_holding_null_as_a_row(tiny_model_dir, tmp_path, first):
    """A null first row crashed pyarrow inside datasets (segmentation fault, exit 139)."""
    path = tmp_path / "train.json"
    rows = [{"prompt": "p", "completion": " c"}] * 3
    path.write_text(json.dumps([None, *rows] if first else [*rows, None]))
    n = 1 if first else 4
    refused(tiny_model_dir, tmp_path, path, f"{path} row {n}: expected a JSON object, got null")


@pytest.mark.parametrize("suffix", ["jsonl", "json"])
def test_a_message_whose_content_is_a_number(tiny_model_dir, tmp_path, suffix):
    row = {"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}
    path = tmp_path / f"train.{suffix}"
    path.write_text(json.dumps(row) + "\n" if suffix == "jsonl" else json.dumps([row]))
    where = f"{path}:1" if suffix == "jsonl" else f"{path} row 1"
    refused(tiny_model_dir, tmp_path, path, f'{where}, key "messages": message 0 needs a role', "got content int (3)")


def test_a_parquet_message_whose_content_is_a_number(tiny_model_dir, tmp_path):
    path = tmp_path / "train.parquet"
    pd.DataFrame({"messages": [[{"role": "user", "content": 3}, {"role": "assistant", "content": 4}]]}).to_parquet(path)
    refused(tiny_model_dir, tmp_path, path, f'{path} row 1, column "messages": message 0 needs a role', "got content int (3)")


@pytest.mark.parametrize(
    "text, row",
    [
        ("prompt,completion\nHello, world, yes\nb,c\n", 1),  # every row too long: pandas made the first cells an index
        ("prompt,completion\na,b\nb,c\nHello, world,x\n", 3),
    ],
)
def test_a_csv_row_with_more_fields_than_the_header(tiny_model_dir, tmp_path, text, row):
    path = tmp_path / "train.csv"
    path.write_text(text)
    refused(tiny_model_dir, tmp_path, path, f"{path} row {row}: 3 fields, the header has 2; quote cells that hold the separator")


def test_a_quoted_separator_is_one_cell(tmp_path):
    from solo_cli.data.sources import load_source
    from solo_cli.data.spec import DataSpec

    path = tmp_path / "train.csv"
    path.write_text('prompt,completion\n"Hello, world",x\n"two\nlines", y\n')
    rows = list(load_source(DataSpec(path)).train.rows())
    assert rows == [{"prompt": "Hello, world", "completion": "x"}, {"prompt": "two\nlines", "completion": " y"}]


def test_a_csv_header_that_repeats_a_column(tiny_model_dir, tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("prompt,prompt,completion\na,b,c\n")
    refused(tiny_model_dir, tmp_path, path, f'{path}: the header names the column "prompt" twice; rename or remove one')


@pytest.mark.parametrize("suffix", ["json", "jsonl"])
def test_a_lone_surrogate_is_refused_by_every_json_reader(tiny_model_dir, tmp_path, suffix):
    """A JSON array's "a\\ud800b" became "ab" through datasets, while JSONL refused it: one rule now."""
    path = tmp_path / f"train.{suffix}"
    row = '{"prompt": "a\\ud800b", "completion": " c"}'
    path.write_text(f"[{row}]" if suffix == "json" else row + "\n")
    where = f"{path} row 1" if suffix == "json" else f"{path}:1"
    refused(tiny_model_dir, tmp_path, path, f"{where}: a string holds a lone surrogate \\ud800", "fix or remove that escape")
