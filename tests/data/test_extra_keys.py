"""Keys no format uses are ignored alike in every source, and said once; column errors name the flags.

Issue 28 item 9: ``{"id", "prompt", "completion"}`` in JSONL was refused while the same rows as CSV or
Parquet trained. Issue 32 item 4: a column-mapping error named ``prompt_column`` instead of ``--prompt-column``.
"""

import pytest
from support import assert_one_line, run, write_rows

from solo_cli.data.sources import load_source
from solo_cli.data.spec import DataSpec

ROWS = [{"id": i, "source": "e2e", "prompt": f"name[Place {i}] ->", "completion": f" Place {i} is a pub."} for i in range(8)]


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


@pytest.mark.parametrize("suffix, what", [(".jsonl", "keys"), (".json", "keys"), (".csv", "columns"), (".parquet", "columns")])
def test_extra_keys_are_ignored_in_every_source_and_named_once(tmp_path, suffix, what):
    rows = load_source(DataSpec(write_rows(tmp_path / f"train{suffix}", ROWS))).train
    assert rows.fmt == "completion" and rows.ignored == ("id", "source")
    assert list(rows.rows())[3] == {"prompt": "name[Place 3] ->", "completion": " Place 3 is a pub."}
    assert rows.note.endswith(f'ignored the {what} "id", "source", which are no field of completion rows')


def test_keys_of_a_later_row_are_named_too_and_a_mapped_file_names_what_it_left(tmp_path):
    rows = [{"prompt": "p", "completion": " c"}, {"prompt": "p", "completion": " d", "meta": {"a": 1}}]
    assert load_source(DataSpec(write_rows(tmp_path / "train.jsonl", rows))).train.ignored == ("meta",)
    mapped = [{"question": "q", "answer": " a", "id": 1}]
    spec = DataSpec(write_rows(tmp_path / "qa.jsonl", mapped), prompt_column="question", completion_column="answer")
    assert load_source(spec).train.ignored == ("id",)


def test_training_says_once_which_keys_it_ignored(tiny_model_dir, tmp_path):
    data = write_rows(tmp_path / "train.jsonl", ROWS)
    code, lines = run("train", "--model", tiny_model_dir, "--data", data, "-o", tmp_path / "run", "--dry-run")
    assert code == 0, lines
    noted = [line for line in lines if 'ignored the keys "id", "source"' in line]
    assert len(noted) == 1 and not any("Traceback" in line for line in lines)


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--dry-run", "-o", "{out}"],
        ["eval", "--no-generate"],
        ["generate", "-o", "{out}.jsonl", "--input"],
    ],
    ids=["train", "eval", "generate"],
)
def test_a_column_error_names_the_flags_that_choose_the_columns(tiny_model_dir, tmp_path, command):
    data = write_rows(tmp_path / "qa.csv", [{"question": "q", "answer": "a"}])
    args = [a.format(out=tmp_path / "run") for a in command]
    args = [*args, data] if args[-1] == "--input" else [*args, "--data", data]
    code, lines = run(*args, "--model", tiny_model_dir)
    assert code == 2
    error = assert_one_line(lines, "hold no rows solo knows", "--prompt-column + --completion-column", "--chosen-column")
    assert "prompt_column" not in error
