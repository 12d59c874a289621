"""`--data` from anywhere, end to end: `solo train`, `solo eval` and `solo generate --input` on CSV and
Parquet files, save_to_disk folders and an offline Hub dataset id, with column mapping."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hub_cache import prefill_hub_cache
from support import assert_one_line, run, write_jsonl

REPO = Path(__file__).resolve().parents[2]
QA = [{"question": f"name[Place {i}] ->", "answer": f" Place {i} is a cheap pub."} for i in range(8)]
PC = [{"prompt": r["question"], "completion": r["answer"]} for r in QA]
TRAIN = ["--max-steps", 2, "--batch-size", 4, "--connections", "emb->2,1->3", "--rank", 2]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """datasets (and solo's encoded splits) cache under the test's own folder."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    return tmp_path / "hf-datasets"


def train(model, data, out, *flags):
    return run("train", "--model", model, "--data", data, "-o", out, *TRAIN, *flags)


def test_train_on_a_csv_file_with_mapped_columns(tiny_model_dir, tmp_path):
    path = tmp_path / "qa.csv"
    pd.DataFrame(QA).to_csv(path, index=False)
    code, lines = train(tiny_model_dir, path, tmp_path / "run", "--prompt-column", "question", "--completion-column", "answer")
    assert code == 0, lines
    assert (tmp_path / "run" / "adapter.safetensors").is_file()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["prompt_column"] == "question" and config["completion_column"] == "answer"
    assert config["data_sha256"] == {"train": hashlib.sha256(path.read_bytes()).hexdigest(), "valid": None}


def test_train_on_a_parquet_file_tokenizes_once(tiny_model_dir, tmp_path, monkeypatch):
    from solo_cli.data import split_encoding
    from solo_cli.training.config import TrainConfig
    from solo_cli.training.run import prepare

    path = tmp_path / "qa.parquet"
    pd.DataFrame([r | {"id": n} for n, r in enumerate(QA)]).to_parquet(path)
    flags = ["--prompt-column", "question", "--completion-column", "answer"]
    code, lines = train(tiny_model_dir, path, tmp_path / "run", *flags)
    assert code == 0, lines
    assert any("8 examples" in line for line in lines), lines

    def tokenize_again(*args, **kwargs):
        raise AssertionError("tokenized again: the encoded split was not read from the cache")

    monkeypatch.setattr(split_encoding, "_encode_batch", tokenize_again)
    cfg = TrainConfig(model=str(tiny_model_dir), data=str(path), prompt_column="question", completion_column="answer")
    assert len(prepare(cfg.validate()).train.examples) == 8  # as a resume prepares it: from the cache


def test_train_on_a_save_to_disk_folder_validates_on_its_split(tiny_model_dir, tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(PC), "validation": Dataset.from_list(PC[:2])}).save_to_disk(tmp_path / "saved")
    code, lines = train(tiny_model_dir, tmp_path / "saved", tmp_path / "run", "--eval-every", 1)
    assert code == 0, lines
    assert (tmp_path / "run" / "best" / "adapter.safetensors").is_file()  # the validation split was used
    code, lines = train(tiny_model_dir, tmp_path / "saved", tmp_path / "run2", "--data-split", "nope")
    assert code == 2
    assert_one_line(lines, "--data-split nope:", "has no such split; its splits are ['train', 'validation']")


def test_train_on_a_folder_of_files_takes_the_split_eval_takes(tiny_model_dir, tmp_path):
    """--data-split names one of a folder's files for train as it does for eval (validation: valid.jsonl)."""
    folder = tmp_path / "splits"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", PC)
    write_jsonl(folder / "valid.jsonl", PC[:4])
    code, lines = train(tiny_model_dir, folder, tmp_path / "run", "--data-split", "validation")
    assert code == 0, lines
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    digest = hashlib.sha256((folder / "valid.jsonl").read_bytes()).hexdigest()
    assert config["data_sha256"] == {"train": digest, "valid": None}  # trained on valid.jsonl, nothing left to validate on
    code, lines = train(tiny_model_dir, folder, tmp_path / "run2", "--data-split", "nope")
    assert code == 2 and not (tmp_path / "run2").exists()
    assert_one_line(lines, "--data-split nope:", "has no such split; its splits are ['train', 'valid']")


def test_a_bad_csv_row_names_the_row_and_column(tiny_model_dir, tmp_path):
    path = tmp_path / "qa.csv"
    rows = QA[:2] + [{"question": "q", "answer": ""}] + QA[3:]
    pd.DataFrame(rows).to_csv(path, index=False)
    code, lines = train(tiny_model_dir, path, tmp_path / "run", "--prompt-column", "question", "--completion-column", "answer")
    assert code == 2
    assert_one_line(lines, f'{path} row 3, column "answer": the completion is empty; fill it in or drop the row')
    assert not (tmp_path / "run" / "adapter.safetensors").exists()


def test_an_unknown_column_names_the_flag(tiny_model_dir, tmp_path):
    path = tmp_path / "qa.parquet"
    pd.DataFrame(QA).to_parquet(path)
    code, lines = train(tiny_model_dir, path, tmp_path / "run", "--prompt-column", "body")
    assert code == 2
    assert_one_line(lines, "--prompt-column body: no such column in", "its columns are ['question', 'answer']")


def test_train_on_an_offline_hub_dataset_id(tiny_model_dir, tmp_path, datasets_cache):
    """As on a plane: the dataset was downloaded once (here: the cache it leaves), the Hub is unreachable."""
    splits = {"train": QA, "validation": QA[:2]}
    prefill_hub_cache(datasets_cache, tmp_path, "solo-test/qa-tiny", "0123456789abcdef0123456789abcdef01234567", splits)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf-home"), "HF_DATASETS_CACHE": str(datasets_cache)}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "solo_cli", "train", "--model", tiny_model_dir, "--data", "solo-test/qa-tiny"]
    args += ["--prompt-column", "question", "--completion-column", "answer", "--valid-split", "validation"]
    args += ["-o", tmp_path / "run", *TRAIN]
    out = subprocess.run([str(a) for a in args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"] == "solo-test/qa-tiny" and config["valid_split"] == "validation"
    assert config["data_sha256"]["train"] and config["data_sha256"]["valid"]  # the datasets fingerprints
    assert (tmp_path / "run" / "best" / "adapter.safetensors").is_file()
    args[args.index("solo-test/qa-tiny")] = "solo-test/absent"
    args[args.index(tmp_path / "run")] = tmp_path / "run2"
    out = subprocess.run([str(a) for a in args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "--data solo-test/absent: no such file or folder, nor a Hub dataset in the datasets cache" in out.stderr


def test_eval_on_a_parquet_file(tiny_model_dir, tmp_path):
    path = tmp_path / "test.parquet"
    pd.DataFrame(QA[:3]).to_parquet(path)
    args = ["eval", "--model", tiny_model_dir, "--data", path, "--prompt-column", "question", "--completion-column", "answer"]
    code, lines = run(*args, "--max-new-tokens", 3, "--json")
    assert code == 0, lines
    result = json.loads("".join(lines))
    assert result["prompts"] == 3 and result["loss"] > 0
    pd.DataFrame([{"question": "q", "answer": None}]).to_parquet(path)
    code, lines = run(*args)
    assert code == 2
    assert_one_line(lines, f'{path} row 1, column "answer": expected a string, got null')


def test_eval_reads_the_test_split_of_a_folder_or_the_one_named(tiny_model_dir, tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(PC), "test": Dataset.from_list(PC[:2])}).save_to_disk(tmp_path / "saved")
    base = ["eval", "--model", tiny_model_dir, "--data", tmp_path / "saved", "--no-generate", "--json"]
    code, lines = run(*base)
    assert code == 0, lines
    code, lines = run(*base, "--data-split", "train")
    assert code == 0, lines
    code, lines = run(*base, "--data-split", "nope")
    assert code == 2
    assert_one_line(lines, "--data-split nope:", "its splits are ['train', 'test']")


def test_generate_input_from_a_parquet_file(tiny_model_dir, tmp_path):
    path = tmp_path / "prompts.parquet"
    pd.DataFrame([{"question": r["question"], "id": n} for n, r in enumerate(QA[:3])]).to_parquet(path)
    preds = tmp_path / "preds.jsonl"
    args = ["generate", "--model", tiny_model_dir, "--input", path, "--output", preds, "--prompt-column", "question"]
    code, lines = run(*args, "--max-new-tokens", 2)
    assert code == 0, lines
    written = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["prompt"] for r in written] == [r["question"] for r in QA[:3]] and all("prediction" in r for r in written)
    pd.DataFrame([{"question": "a"}, {"question": None}]).to_parquet(path)
    code, lines = run(*args)
    assert code == 2
    assert_one_line(lines, f'{path} row 2, column "question": expected a string, got null')
