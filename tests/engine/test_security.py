"""No pickles from user files, and corrupted inputs never end in a traceback or a hang."""

import os
import pickle
import random
from pathlib import Path

import pytest
from support import info_for, make_adapter, perturb
from tiny import make_model, make_tokenizer
from typer.testing import CliRunner

from solo_cli import load_adapter, read_info, save_adapter
from solo_cli.cli import app
from solo_cli.data.rows import check_one_format, json_objects
from solo_cli.engine.models import load_model
from solo_cli.errors import UsageError
from solo_cli.inference.report import adapter_report

SOURCE = Path(__file__).resolve().parents[2] / "solo_cli"


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_in_a_model_folder_is_never_executed(tmp_path):
    folder = tmp_path / "evil"
    make_model("llama").config.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    marker = tmp_path / "PWNED"
    with open(folder / "pytorch_model.bin", "wb") as handle:
        pickle.dump({"model.embed_tokens.weight": _Payload(marker)}, handle)
    with pytest.raises(UsageError, match="pickled weights"):
        load_model(str(folder))
    assert not marker.exists()
    result = CliRunner().invoke(app, ["generate", "--model", str(folder), "hi"])
    assert result.exit_code == 2 and not marker.exists()


def test_the_code_never_calls_torch_load_without_weights_only():
    for path in SOURCE.glob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, f"{path.name}: {line.strip()}"
        assert "pickle" not in text.replace("pickled", "").replace("pickles", ""), path.name


def _corrupt(data: bytes, rng: random.Random, region: int) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        pos = rng.randrange(min(region, len(data)))
        if kind < 0.5:
            data[pos] = rng.randrange(256)
        elif kind < 0.75:
            del data[pos]
        else:
            data.insert(pos, rng.randrange(256))
    return bytes(data)


def test_fuzzed_jsonl_files_give_rows_or_a_usage_error(tmp_path):
    original = (Path(__file__).resolve().parents[2] / "sample_data" / "e2e" / "train.jsonl").read_bytes()
    original = b"".join(original.splitlines(keepends=True)[:15])
    rng = random.Random(1234)
    path = tmp_path / "fuzz.jsonl"
    outcomes = {"ok": 0, "error": 0}
    for _ in range(400):
        path.write_bytes(_corrupt(original, rng, len(original)))
        try:
            list(check_one_format(json_objects(path)))  # the JSONL reader's checks, row by row
            outcomes["ok"] += 1
        except UsageError as exc:
            assert str(path) in exc.message
            outcomes["error"] += 1
    assert outcomes["error"] > 100 and outcomes["ok"] > 10


def test_fuzzed_adapter_headers_give_an_adapter_or_a_usage_error(tmp_path):
    model = make_model("llama")
    adapter = perturb(make_adapter(model))
    good = save_adapter(tmp_path / "good.safetensors", adapter, info_for(model, adapter)).read_bytes()
    header_end = 8 + int.from_bytes(good[:8], "little")
    rng = random.Random(99)
    path = tmp_path / "fuzz.safetensors"
    errors = 0
    for _ in range(400):
        path.write_bytes(_corrupt(good, rng, header_end))
        try:
            read_info(path)
            load_adapter(path)
            adapter_report(path)
        except UsageError as exc:
            assert str(path) in exc.message
            errors += 1
    assert errors > 200
    # and through the CLI: one line, exit 2, no traceback
    path.write_bytes(good[:40] + b"\xff" + good[41:])
    result = CliRunner().invoke(app, ["inspect", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
