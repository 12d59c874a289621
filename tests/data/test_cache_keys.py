"""Caches keyed on content: an edited data file is read again even when its size and modification time are
the old file's (`cp -p`, `rsync -a`, `tar x`, `touch -d`), and so is its encoded split."""

import hashlib
import os

import pandas as pd
import pytest
from support import write_jsonl

from solo_cli.data.sources import load_source
from solo_cli.data.spec import DataSpec
from solo_cli.data.split_encoding import encode_rowset


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


def rows(n: int, answer: str) -> list[dict]:
    return [{"prompt": f"name[Place {i}] ->", "completion": f" {answer} {i}."} for i in range(n)]


def edit_keeping_size_and_mtime(path, write) -> None:
    before = os.stat(path)
    write()
    assert os.stat(path).st_size == before.st_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def writers(tmp_path):
    return {
        "jsonl": lambda r: write_jsonl(tmp_path / "train.jsonl", r),
        "csv": lambda r: pd.DataFrame(r).to_csv(tmp_path / "train.csv", index=False),
        "tsv": lambda r: pd.DataFrame(r).to_csv(tmp_path / "train.tsv", index=False, sep="\t"),
        "json": lambda r: pd.DataFrame(r).to_json(tmp_path / "train.json", orient="records"),
        "parquet": lambda r: pd.DataFrame(r).to_parquet(tmp_path / "train.parquet"),
    }


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "tsv", "json"])
def test_an_edited_file_with_its_old_size_and_mtime_is_read_again(tmp_path, tokenizer, suffix):
    write, path = writers(tmp_path)[suffix], tmp_path / f"train.{suffix}"
    write(rows(4, "cheap"))
    settings = {"chat_template": False, "train_on_prompt": False, "max_len": 64}
    old = load_source(DataSpec(path)).train
    assert list(old.rows()) == rows(4, "cheap")
    old_examples = list(encode_rowset(old, tokenizer, **settings).examples)
    edit_keeping_size_and_mtime(path, lambda: write(rows(4, "pricy")))
    new = load_source(DataSpec(path)).train
    assert list(new.rows()) == rows(4, "pricy")
    assert new.rows_digest == hashlib.sha256(path.read_bytes()).hexdigest() != old.rows_digest
    assert list(encode_rowset(new, tokenizer, **settings).examples) != old_examples


def test_an_edited_parquet_file_with_its_old_mtime_is_read_again(tmp_path):
    write, path = writers(tmp_path)["parquet"], tmp_path / "train.parquet"
    write(rows(4, "cheap"))
    assert list(load_source(DataSpec(path)).train.rows()) == rows(4, "cheap")
    before = os.stat(path)
    write(rows(4, "pricy"))  # a Parquet file's size may change with its values: only the mtime is restored
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert list(load_source(DataSpec(path)).train.rows()) == rows(4, "pricy")


def test_the_same_file_is_read_back_from_the_cache(tmp_path, monkeypatch):
    from solo_cli.data import jsonl

    path = write_jsonl(tmp_path / "train.jsonl", rows(4, "cheap"))
    load_source(DataSpec(path))

    def parse_again(*args, **kwargs):
        raise AssertionError("parsed again: the Arrow copy was not read from the cache")

    monkeypatch.setattr(jsonl, "_jsonl_rows", parse_again)
    assert list(load_source(DataSpec(path)).train.rows()) == rows(4, "cheap")
