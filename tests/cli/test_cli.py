"""The command line end to end on a tiny model folder (CliRunner, in-process)."""

import json
import re

import pytest
from support import write_jsonl
from typer.testing import CliRunner

from solo_cli.cli import app

runner = CliRunner()


def invoke(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture
def trained(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "train",
        "--model",
        tiny_model_dir,
        "--data",
        tiny_data,
        "-o",
        out,
        "--max-steps",
        4,
        "--connections",
        "emb->2,1->3",
        "--rank",
        4,
        "--batch-size",
        4,
        "--lr",
        1e-2,
        "--gate",
        "zero-init",
    )
    assert result.exit_code == 0, result.output
    return out


def test_train_prints_the_parameter_line_and_writes_the_run(trained, tiny_model_dir, tiny_data, tmp_path):
    result = invoke(
        "train",
        "--model",
        tiny_model_dir,
        "--data",
        tiny_data,
        "-o",
        tmp_path / "run2",
        "--max-steps",
        2,
        "--connections",
        "emb->2,1->3",
        "--rank",
        4,
    )
    assert result.exit_code == 0, result.output
    trainable = 2 * 2 * 32 * 4  # the default schedule gate is a buffer, not a parameter
    assert f"trainable params: {trainable:,} || all params: " in result.output
    assert "trainable%: " in result.output
    assert "step 2/2 loss" in result.output  # plain progress lines when not on a terminal
    assert (trained / "adapter.safetensors").is_file() and (trained / "best" / "adapter.safetensors").is_file()


def test_existing_run_is_refused_without_overwrite(trained, tiny_model_dir, tiny_data):
    before = (trained / "adapter.safetensors").read_bytes()
    result = invoke("train", "--model", tiny_model_dir, "--data", tiny_data, "-o", trained, "--max-steps", 1)
    assert result.exit_code == 2
    assert "already holds a run" in result.output and "--overwrite" in result.output
    assert (trained / "adapter.safetensors").read_bytes() == before
    result = invoke("train", "--model", tiny_model_dir, "--data", tiny_data, "-o", trained, "--max-steps", 1, "--overwrite")
    assert result.exit_code == 0, result.output


def test_dry_run_shows_config_stats_and_mask_and_writes_nothing(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "dry"
    result = invoke("train", "--model", tiny_model_dir, "--data", tiny_data, "-o", out, "--dry-run", "--connections", "top:1")
    assert result.exit_code == 0, result.output
    for text in ("resolved config", "connections (resolved)", "1->3", "trained tokens", "first example", "trainable params"):
        assert text in result.output
    assert not out.exists()


def test_yaml_config_and_flags_override_it(tiny_model_dir, tiny_data, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {tiny_model_dir}\nrank: 2\nconnections: top:1\nmax-steps: 2\n")
    result = invoke("train", "--config", config, "--data", tiny_data, "-o", tmp_path / "r", "--rank", 3)
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["rank"] == 3 and saved["max_steps"] == 2 and saved["connections_resolved"] == "1->3"
    config.write_text("rank: 2\nlearning_rate: 1\n")
    result = invoke("train", "--config", config, "--data", tiny_data, "-o", tmp_path / "r2")
    assert result.exit_code == 2 and "unknown keys learning_rate" in result.output


def test_generate_with_adapter_prompt_stdin_and_batch(trained, tiny_model_dir, tmp_path):
    adapter = trained / "adapter.safetensors"
    result = invoke("generate", "--adapter", adapter, "--model", tiny_model_dir, "--max-new-tokens", 5, "name[Place 1] ->")
    assert result.exit_code == 0, result.output
    from_stdin = invoke(
        "generate", "--adapter", adapter, "--model", tiny_model_dir, "--max-new-tokens", 5, "-", input="name[Place 1] ->\n"
    )
    assert from_stdin.exit_code == 0 and from_stdin.output == result.output
    rows = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"name[Place {i}] ->", "references": ["x"]} for i in range(3)])
    preds = tmp_path / "preds.jsonl"
    result = invoke(
        "generate",
        "--adapter",
        adapter,
        "--model",
        tiny_model_dir,
        "--input",
        rows,
        "--output",
        preds,
        "--max-new-tokens",
        5,
        "--batch-size",
        2,
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(lines) == 3 and all("prediction" in r and r["references"] == ["x"] for r in lines)


def test_generate_defaults_to_the_adapters_base_model(trained, tiny_model_dir):
    result = invoke("generate", "--adapter", trained / "adapter.safetensors", "--max-new-tokens", 3, "hello")
    assert result.exit_code == 0, result.output


def test_generate_refuses_an_adapter_for_another_base(trained, tmp_path):
    from tiny import save_tiny

    other = save_tiny(tmp_path / "gpt2", "gpt2")
    result = invoke("generate", "--adapter", trained / "adapter.safetensors", "--model", other, "hi")
    assert result.exit_code == 2 and "was trained on" in result.output and "--force" in result.output


def test_inspect_adapter_table_and_json(trained):
    result = invoke("inspect", trained / "adapter.safetensors")
    assert result.exit_code == 0, result.output
    assert "emb" in result.output and "total" in result.output and "zero-init" in result.output
    result = invoke("inspect", trained / "adapter.safetensors", "--json")
    report = json.loads(result.output)
    assert report["trainable_params"] == 2 * 2 * 32 * 4
    assert [(c["source"], c["destination"]) for c in report["connections"]] == [(-1, 2), (1, 3)]
    assert report["fingerprint"]["num_blocks"] == 4 and report["training"]["steps"] == 4
    assert all(c["norm"] > 0 for c in report["connections"])


def test_inspect_model_plan_beside_lora(tiny_model_dir):
    result = invoke("inspect", "--model", tiny_model_dir, "--connections", "0->3,1->3", "--rank", 2, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["plan"]["trainable_params"] == 2 * 2 * 32 * 2  # the default schedule gate trains nothing
    # tiny llama: q 32->32, v 32->16 (2 kv heads of 8), r=4, 4 blocks
    assert report["lora_qv_r4"]["trainable_params"] == 4 * 4 * ((32 + 32) + (32 + 16))
    assert report["plan"]["blocks_with_backward"] == 0  # block 3 is the last: A and B learn from the head alone
    result = invoke("inspect", "--model", tiny_model_dir)
    assert result.exit_code == 0 and "LoRA r=4 on q,v" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--data", "missing.jsonl"], "missing.jsonl"),
        (["train", "--gate", "sometimes"], "--gate"),
        (["train", "--rank", "0"], "--rank"),
        (["train", "--connections", "3->1"], "backwards"),
        (["generate", "--adapter", "nope.safetensors", "hi"], "nope.safetensors"),
        (["inspect"], "give an adapter"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(args, message, tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if args[0] == "train" and "--data" not in args:
        args = [*args, "--data", str(tiny_data)]
    if args[0] == "train":
        args = [*args, "--model", tiny_model_dir, "-o", str(tmp_path / "o")]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_chat_rows_train_and_generate_uses_the_template_by_default(tiny_model_dir, tmp_path):
    rows = [
        {"messages": [{"role": "user", "content": f"name[Place {i}]"}, {"role": "assistant", "content": f"Place {i} is a pub."}]}
        for i in range(8)
    ]
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    out = tmp_path / "chat-run"
    result = invoke("train", "--model", tiny_model_dir, "--data", data, "-o", out, "--max-steps", 2, "--connections", "top:1")
    assert result.exit_code == 0, result.output
    from tiny import make_tokenizer

    from solo_cli import read_info
    from solo_cli.inference.generation import build_prompt

    info = read_info(out / "adapter.safetensors")
    assert info.data_format == "chat" and info.chat_template is True
    chat = invoke("generate", "--adapter", out, "--max-new-tokens", 4, "name[Place 1]")
    explicit = invoke("generate", "--adapter", out, "--max-new-tokens", 4, "--chat", "name[Place 1]")
    plain = invoke("generate", "--adapter", out, "--max-new-tokens", 4, "--no-chat", "name[Place 1]")
    assert chat.exit_code == 0 and chat.output == explicit.output
    assert build_prompt(make_tokenizer(), "x", chat=True).endswith("<|im_start|>assistant\n")
    assert plain.exit_code == 0


def test_train_on_prompt_trains_more_tokens(tiny_model_dir, tiny_data, tmp_path):
    counts = []
    for flag in ([], ["--train-on-prompt"]):
        result = invoke("train", "--model", tiny_model_dir, "--data", tiny_data, "--dry-run", "--no-chat-template", *flag)
        assert result.exit_code == 0, result.output
        counts.append(int(re.search(r"trained tokens\W+(\d+)", result.output).group(1)))
    assert counts[1] > counts[0]
