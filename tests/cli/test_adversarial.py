"""Hostile input through the command line: every case ends in one clear line, the right exit code, no traceback.

Each case here was a Python traceback once: huge or deep JSON, lone surrogates, prompts longer
than the model's context, unwritable or full output folders, out-of-range seeds, adapter headers
with the wrong types, and adapter tensors that are not finite floats.
"""

import json
import pathlib
import struct
import tempfile

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from support import assert_one_line, encode_rows, make_adapter, perturb, read_rows, run, write_jsonl
from tiny import HIDDEN, VOCAB, make_model, make_tokenizer
from transformers import GPT2Config, GPT2LMHeadModel
from typer.testing import CliRunner

from solo_cli import fingerprint
from solo_cli.cli import app
from solo_cli.engine.adapter_file import AdapterInfo, read_info, save_adapter
from solo_cli.errors import UsageError

runner = CliRunner()
CONTEXT = 32  # n_positions of the short-context GPT-2 below
LONG = "hello world " * 30  # far more than CONTEXT tokens


def save_short_gpt2(path, declare_in_tokenizer: bool = False) -> str:
    """A tiny GPT-2 with only CONTEXT positions (its position table raises IndexError beyond them)."""
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2,
        n_embd=HIDDEN,
        n_head=2,
        vocab_size=VOCAB,
        n_positions=CONTEXT,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer = make_tokenizer(chat=False)
    if declare_in_tokenizer:  # as GPT-2's own tokenizer does (model_max_length 1024 = n_positions)
        tokenizer.model_max_length = CONTEXT
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def short_gpt2(tmp_path_factory):
    return save_short_gpt2(tmp_path_factory.mktemp("short-gpt2"))


@pytest.fixture(scope="session")
def short_gpt2_declared(tmp_path_factory):
    return save_short_gpt2(tmp_path_factory.mktemp("short-gpt2-declared"), declare_in_tokenizer=True)


# 1. Data rows that are valid UTF-8 but break the JSON reader or the tokenizer.

GOOD_ROW = json.dumps({"prompt": "name[Place 1] ->", "completion": " Place 1 is a pub."})
BAD_LINES = {
    "huge-int": ('{"prompt": "p ->", "completion": "c", "n": ' + "9" * 5000 + "}", ["4300 digits", "string"]),
    "deep": ('{"prompt": "p ->", "completion": "c", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", ["nested"]),
    "surrogate": ('{"prompt": "p \\ud800 ->", "completion": "c"}', ["surrogate", "\\ud800"]),
    "surrogate-key": ('{"prompt": "p ->", "completion": "c", "\\udfff": 1}', ["surrogate", "\\udfff"]),
}


def bad_file(tmp_path, kind: str) -> pathlib.Path:
    path = tmp_path / f"{kind}.jsonl"
    path.write_text(f"{GOOD_ROW}\n{BAD_LINES[kind][0]}\n{GOOD_ROW}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_read_rows_refuses_hostile_json_naming_the_line(tmp_path, kind):
    path = bad_file(tmp_path, kind)
    with pytest.raises(UsageError) as info:
        read_rows(path)
    assert f"{path}:2" in info.value.message
    for needle in BAD_LINES[kind][1]:
        assert needle in info.value.message
    info.value.message.encode("utf-8")  # the message itself can be printed


@pytest.mark.parametrize("kind", list(BAD_LINES))
@pytest.mark.parametrize("command", ["train", "eval", "generate"])
def test_hostile_rows_are_one_line_in_every_command(tiny_model_dir, tmp_path, kind, command):
    path = bad_file(tmp_path, kind)
    args = {
        "train": ["train", "--model", tiny_model_dir, "--data", path, "-o", tmp_path / "run"],
        "eval": ["eval", "--model", tiny_model_dir, "--data", path],
        "generate": ["generate", "--model", tiny_model_dir, "--input", path, "--output", tmp_path / "p.jsonl"],
    }[command]
    code, lines = run(*args)
    assert code == 2
    assert_one_line(lines, f"{path.name}:2", *BAD_LINES[kind][1])
    assert not (tmp_path / "p.jsonl").exists() and not (tmp_path / "run" / "adapter.safetensors").exists()


PREDICTION_LINES = {
    "huge-int": '{"prediction": ' + "9" * 5000 + "}",
    "deep": '{"prediction": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "surrogate": '{"prediction": "p \\ud800"}',
}


@pytest.mark.parametrize("kind", list(PREDICTION_LINES))
def test_hostile_predictions_file_is_one_line(tmp_path, kind):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p ->", "completion": "c"}])
    line = PREDICTION_LINES[kind]
    preds = tmp_path / "preds.jsonl"
    preds.write_text(line + "\n", encoding="utf-8")
    code, lines = run("eval", "--data", data, "--predictions", preds)
    assert code == 2
    assert_one_line(lines, "--predictions", f"{preds}:1")


def test_a_prompt_argument_that_is_not_text_is_one_line(tiny_model_dir):
    code, lines = run("generate", "--model", tiny_model_dir, "bad \udcff bytes")  # how Linux passes invalid UTF-8 argv
    assert code == 2
    assert_one_line(lines, "prompt", "UTF-8")


# 2. Prompts longer than the model's context window.


def test_context_length_comes_from_the_model_config():
    from solo_cli.data.row_encoding import context_length

    assert context_length(make_model("gpt2")) == 256  # n_positions
    assert context_length(make_model("llama")) == 256  # max_position_embeddings
    assert context_length(torch.nn.Linear(2, 2)) is None  # no config: unlimited


def test_encode_rows_cuts_to_the_context(tokenizer):
    rows = [{"prompt": "p ->", "completion": LONG}, {"prompt": LONG, "completion": " c"}]
    encoded = encode_rows(rows, "completion", tokenizer, chat_template=False, train_on_prompt=False, max_len=256, context=CONTEXT)
    assert [len(e.input_ids) for e in encoded.examples] == [CONTEXT]
    assert encoded.truncated == 1 and encoded.skipped == 1 and encoded.limit == CONTEXT


def test_train_cuts_examples_to_the_context(short_gpt2_declared, tmp_path):
    rows = [{"prompt": f"name[Place {i}] ->", "completion": LONG} for i in range(4)] + [{"prompt": LONG, "completion": " c"}]
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            short_gpt2_declared,
            "--data",
            str(data),
            "-o",
            str(tmp_path / "run"),
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--connections",
            "0->1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "skipped 1 of 5 training rows" in result.output
    assert (tmp_path / "run" / "adapter.safetensors").is_file()


def test_eval_loss_cuts_examples_to_the_context(short_gpt2, tmp_path):
    data = write_jsonl(tmp_path / "long.jsonl", [{"prompt": "p ->", "completion": LONG}] * 2)
    result = runner.invoke(app, ["eval", "--model", short_gpt2, "--data", str(data), "--no-generate", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["loss"] > 0


def test_eval_refuses_a_prompt_longer_than_the_context(short_gpt2, tmp_path):
    rows = [{"prompt": "p ->", "completion": " c"}, {"prompt": "q ->", "completion": " c"}, {"prompt": LONG, "completion": " c"}]
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    code, lines = run("eval", "--model", short_gpt2, "--data", data, "--max-new-tokens", 4, "-o", tmp_path / "p.jsonl")
    assert code == 2
    assert_one_line(lines, "long.jsonl:3", f"context of {CONTEXT}", "shorten")
    assert not (tmp_path / "p.jsonl").exists()


def test_eval_refuses_max_new_tokens_past_the_context(short_gpt2, tmp_path):
    data = write_jsonl(tmp_path / "short.jsonl", [{"prompt": "p ->", "completion": " c"}])
    code, lines = run("eval", "--model", short_gpt2, "--data", data, "--max-new-tokens", CONTEXT)
    assert code == 2
    assert_one_line(lines, "short.jsonl:1", "--max-new-tokens", f"context of {CONTEXT}")


def test_generate_refuses_a_long_prompt_argument(short_gpt2):
    code, lines = run("generate", "--model", short_gpt2, "--max-new-tokens", 4, LONG)
    assert code == 2
    assert_one_line(lines, "prompt: ", f"context of {CONTEXT}", "shorten")


def test_generate_refuses_a_long_input_row_naming_its_line(short_gpt2, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"prompt": "a ->"}\n\n{"prompt": "' + LONG + '"}\n', encoding="utf-8")
    out = tmp_path / "p.jsonl"
    code, lines = run("generate", "--model", short_gpt2, "--input", path, "--output", out, "--max-new-tokens", 4)
    assert code == 2
    assert_one_line(lines, "in.jsonl:3", f"context of {CONTEXT}")
    assert not out.exists()


def test_generate_within_the_context_still_works(short_gpt2, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a ->"}, {"prompt": "hello world hello world"}])
    out = tmp_path / "p.jsonl"
    result = runner.invoke(
        app, ["generate", "--model", short_gpt2, "--input", str(path), "--output", str(out), "--max-new-tokens", "8"]
    )
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 2


# 3. Output folders that cannot be written, and a disk that fills up.


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """A folder nobody may write in (root ignores the mode bits, so refuse its temporary files too)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and pathlib.Path(dir).resolve() == folder.resolve():
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    yield folder
    folder.chmod(0o755)


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_unwritable_output_fails_before_loading_the_model(read_only_dir, tmp_path, command):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p ->", "completion": " c"}])
    missing_model = tmp_path / "no-such-model"  # loading it would fail: the output check must come first
    out = read_only_dir / "preds.jsonl"
    if command == "generate":
        code, lines = run("generate", "--model", missing_model, "--input", data, "--output", out)
    else:
        code, lines = run("eval", "--model", missing_model, "--data", data, "--output", out)
    assert code == 2
    assert_one_line(lines, f"--output {out}", "cannot write")
    assert list(read_only_dir.iterdir()) == []


@pytest.fixture
def full_disk(monkeypatch):
    """Every write of a temporary file fails with ENOSPC, as on a full disk."""
    real = pathlib.Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name.endswith(".tmp"):
            raise OSError(28, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)


def test_full_disk_in_generate_keeps_the_old_predictions(tiny_model_dir, tmp_path, full_disk):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p ->"}])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "p.jsonl"
    old = '{"prompt": "p ->", "prediction": "old"}\n'  # predictions solo wrote: the only file it replaces
    out.write_text(old)
    code, lines = run("generate", "--model", tiny_model_dir, "--input", data, "--output", out, "--max-new-tokens", 2)
    assert code == 1
    assert_one_line(lines, "no space left on device", str(out), "--output")
    assert out.read_text() == old
    assert [p.name for p in out_dir.iterdir()] == ["p.jsonl"]


def test_full_disk_in_eval_keeps_predictions_and_metrics(tiny_model_dir, tmp_path, full_disk):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p ->", "completion": " c"}])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out, metrics = out_dir / "p.jsonl", out_dir / "p.metrics.json"
    old = {out: '{"prompt": "p ->", "prediction": "old"}\n', metrics: '{"data": "d.jsonl", "prompts": 1}\n'}
    for path, text in old.items():  # what an earlier `solo eval` wrote: the only files it replaces
        path.write_text(text)
    code, lines = run("eval", "--model", tiny_model_dir, "--data", data, "--output", out, "--max-new-tokens", 2)
    assert code == 1
    assert_one_line(lines, "no space left on device", "--output")
    assert all(path.read_text() == text for path, text in old.items())
    assert sorted(p.name for p in out_dir.iterdir()) == ["p.jsonl", "p.metrics.json"]


# 4. Flags out of range.


@pytest.mark.parametrize("seed", ["4294967296", "-1", "99999999999999999999999"])
def test_train_seed_out_of_range_is_one_line(tiny_model_dir, tiny_data, tmp_path, seed):
    code, lines = run("train", "--model", tiny_model_dir, "--data", tiny_data, "-o", tmp_path / "run", "--seed", seed)
    assert code == 2
    assert_one_line(lines, f"--seed {seed}", "4294967295")


def test_train_seed_at_the_top_of_the_range_is_accepted(tiny_model_dir, tiny_data, tmp_path):
    code, lines = run("train", "--model", tiny_model_dir, "--data", tiny_data, "--seed", 2**32 - 1, "--dry-run")
    assert code == 0, lines


@pytest.mark.parametrize("seed", ["4294967296", "-5"])
def test_generate_seed_out_of_range_is_one_line(tiny_model_dir, seed):
    code, lines = run("generate", "--model", tiny_model_dir, "--seed", seed, "hi")
    assert code == 2
    assert_one_line(lines, f"--seed {seed}")


# 5. Adapter headers that are valid JSON with the wrong types or values.


@pytest.fixture(scope="session")
def adapter_parts(tiny_model_dir):
    """Tensors and header of an adapter for the tiny Llama (4 blocks, d=32)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapter = perturb(make_adapter(model, "schedule", plan=[(0, 2), (1, 3)], rank=4))
    info = AdapterInfo(
        config=adapter.config,
        fingerprint=fingerprint(model),
        base_model=tiny_model_dir,
        training={"steps": 3, "final_loss": 1.5},
    )
    tensors = {k: v.detach().contiguous() for k, v in adapter.state_dict().items()}
    return tensors, info.to_metadata()


def write_adapter(path, parts, **changes) -> pathlib.Path:
    """Save the adapter with header fields replaced (a Python value, dumped as JSON) or removed (None sentinel)."""
    tensors, meta = parts
    meta = dict(meta)
    for key, value in changes.items():
        if value is REMOVE:
            meta.pop(key, None)
        else:
            meta[key] = json.dumps(value)
    save_file(tensors, str(path), metadata=meta)
    return path


REMOVE = object()
FP = {"model_type": "llama", "num_blocks": 4, "hidden_size": 32, "vocab_size": VOCAB}
BAD_HEADERS = [
    ({"rank": 10**12}, ["rank", "1..32"]),
    ({"rank": -3}, ["rank"]),
    ({"rank": 0}, ["rank"]),
    ({"rank": "4"}, ["rank"]),
    ({"rank": True}, ["rank"]),
    ({"rank": 4.5}, ["rank"]),
    ({"rank": REMOVE}, ["rank"]),
    ({"training": "a summary"}, ["training"]),
    ({"training": [1, 2]}, ["training"]),
    ({"connections": [[0, 1, 2]]}, ["connections"]),
    ({"connections": [["0", 2]]}, ["connections"]),
    ({"connections": [[0, True]]}, ["connections"]),
    ({"connections": "0->2"}, ["connections"]),
    ({"connections": []}, ["connections"]),
    ({"connections": [[2, 1]]}, ["connections"]),
    ({"connections": [[0, 9]]}, ["connections", "4 blocks"]),
    ({"connections": [[-2, 1]]}, ["connections"]),
    ({"connections": [[0, 2], [0, 2]]}, ["connections", "twice"]),
    ({"fingerprint": FP | {"hidden_size": "32"}}, ["fingerprint", "hidden_size"]),
    ({"fingerprint": FP | {"hidden_size": 0}}, ["fingerprint", "hidden_size"]),
    ({"fingerprint": {k: v for k, v in FP.items() if k != "num_blocks"}}, ["fingerprint", "num_blocks"]),
    ({"fingerprint": FP | {"extra": 1}}, ["fingerprint", "extra"]),
    ({"fingerprint": FP | {"model_type": 7}}, ["fingerprint", "model_type"]),
    ({"fingerprint": "llama"}, ["fingerprint"]),
    ({"base_model": 5}, ["base_model"]),
    ({"base_model": None}, ["base_model"]),
    ({"base_model": ""}, ["base_model"]),
    ({"base_model": "m\ud800"}, ["base_model"]),
    ({"base_revision": 3}, ["base_revision"]),
    ({"gate": "magic"}, ["gate", "magic"]),
    ({"homotopy_steps": -1}, ["homotopy_steps"]),
    ({"homotopy_steps": "10"}, ["homotopy_steps"]),
    ({"source_norm": "l2"}, ["source_norm", "l2"]),
    ({"chat_template": "yes"}, ["chat_template"]),
    ({"data_format": 1}, ["data_format"]),
    ({"solo_version": 2}, ["solo_version"]),
    ({"format_version": "2"}, ["format_version"]),
    ({"format_version": 0}, ["format_version"]),
    ({"rank": -1, "gate": "magic", "training": "x"}, ["rank", "gate", "training"]),  # every problem, at once
]


@pytest.mark.parametrize("changes, needles", BAD_HEADERS, ids=[str(sorted(c)) + str(i) for i, (c, _) in enumerate(BAD_HEADERS)])
@pytest.mark.parametrize("command", ["inspect", "generate"])
def test_bad_adapter_header_is_one_line(adapter_parts, tiny_model_dir, tmp_path, changes, needles, command):
    path = write_adapter(tmp_path / "a.safetensors", adapter_parts, **changes)
    if command == "inspect":
        code, lines = run("inspect", path)
    else:
        code, lines = run("generate", "--model", tiny_model_dir, "--adapter", path, "--max-new-tokens", 2, "hi")
    assert code == 2
    line = assert_one_line(lines, "a.safetensors", *needles)
    line.encode("utf-8")


def test_null_training_reads_as_empty(adapter_parts, tmp_path):
    path = write_adapter(tmp_path / "a.safetensors", adapter_parts, training=None)
    assert read_info(path).training == {}


def test_a_good_header_still_reads_and_inspects(adapter_parts, tmp_path):
    path = write_adapter(tmp_path / "a.safetensors", adapter_parts)
    info = read_info(path)
    assert info.config.rank == 4 and info.config.connections == [(0, 2), (1, 3)]
    code, lines = run("inspect", path, "--json")
    assert code == 0, lines


# 6. Adapter tensors that are not finite floats (a bit-flipped or hand-edited file).


def flip_to(path: pathlib.Path, key: str, value: float) -> None:
    """Overwrite the first element of tensor ``key`` in place, as a bit flip would."""
    raw = bytearray(path.read_bytes())
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + header_len])
    start = 8 + header_len + header[key]["data_offsets"][0]
    raw[start : start + 4] = struct.pack("<f", value)
    path.write_bytes(bytes(raw))


def saved_adapter(tmp_path, name: str, seed: int = 0) -> pathlib.Path:
    model = make_model("llama")
    adapter = perturb(make_adapter(model, "schedule", seed=seed))
    info = AdapterInfo(config=adapter.config, fingerprint=fingerprint(model), base_model="tiny")
    return save_adapter(tmp_path / name, adapter, info)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_merge_refuses_non_finite_tensors(tmp_path, value):
    good = saved_adapter(tmp_path, "good.safetensors")
    bad = saved_adapter(tmp_path, "bad.safetensors", seed=1)
    flip_to(bad, "connections.0_3.B", value)
    code, lines = run("merge", good, bad, "-o", tmp_path / "merged.safetensors")
    assert code == 2
    assert_one_line(lines, "bad.safetensors", "connections.0_3.B", "damaged")
    assert not (tmp_path / "merged.safetensors").exists()
    code, lines = run("inspect", bad)
    assert code == 2
    assert_one_line(lines, "bad.safetensors", "connections.0_3.B", "damaged")


def test_merge_refuses_an_integer_tensor(tmp_path):
    good = saved_adapter(tmp_path, "good.safetensors")
    bad = saved_adapter(tmp_path, "bad.safetensors", seed=1)
    raw = bad.read_bytes()
    header_len = struct.unpack("<Q", raw[:8])[0]
    header = raw[8 : 8 + header_len].replace(b'"dtype":"F32"', b'"dtype":"I32"', 1)  # same length: offsets hold
    bad.write_bytes(raw[:8] + header + raw[8 + header_len :])
    with safe_open(str(bad), framework="pt") as handle:
        assert any(handle.get_tensor(k).dtype == torch.int32 for k in handle.keys())
    code, lines = run("merge", good, bad, "-o", tmp_path / "merged.safetensors")
    assert code == 2
    assert_one_line(lines, "bad.safetensors", "int32", "damaged")
    assert not (tmp_path / "merged.safetensors").exists()


def test_half_precision_tensors_still_load(tmp_path):
    from solo_cli.engine.adapter_file import load_adapter

    path = saved_adapter(tmp_path, "a.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata()
        tensors = {k: handle.get_tensor(k).to(torch.bfloat16) for k in handle.keys()}
    save_file(tensors, str(path), metadata=meta)
    adapter, _ = load_adapter(path)
    assert adapter.connections["0_3"].A.dtype == torch.float32
