"""`solo generate` (and eval's generation) on hostile input: absurd sizes refused before anything is
allocated, and the chat template asked of a model that has none."""

import json

import pytest
from support import assert_one_line, info_for, make_adapter, run, write_jsonl
from tiny import make_model, make_tokenizer

from solo_cli import save_adapter
from solo_cli.inference.generation_settings import MAX_NUM_BEAMS, GenerationSettings


@pytest.fixture(scope="module")
def plain_model_dir(tmp_path_factory):
    """A tiny Llama whose tokenizer has no chat template."""
    path = tmp_path_factory.mktemp("plain-llama")
    make_model("llama").save_pretrained(path)
    make_tokenizer(chat=False).save_pretrained(path)
    assert "chat_template" not in json.loads((path / "tokenizer_config.json").read_text())
    return str(path)


# Sizes: refused while the flags are checked, before the model loads (the model named here does not exist).


@pytest.mark.parametrize("command", ["generate", "eval"])
def test_an_absurd_beam_width_is_refused_before_loading(tmp_path, command):
    missing = tmp_path / "no-such-model"
    if command == "generate":
        code, lines = run("generate", "hi", "--model", missing, "--num-beams", 2**40)
    else:
        data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p ->", "completion": " c"}])
        code, lines = run("eval", "--model", missing, "--data", data, "--num-beams", 2**40)
    assert code == 2
    assert_one_line(lines, f"--num-beams {2**40}", f"at most {MAX_NUM_BEAMS}")


def test_the_widest_beam_allowed_is_accepted():
    GenerationSettings(num_beams=MAX_NUM_BEAMS).validate()


@pytest.mark.parametrize("temperature", ["1e-300", "1e-5"])
def test_a_temperature_too_cold_to_sample_is_refused(tmp_path, temperature):
    """Logits divided by 1e-300 overflow to inf and torch.multinomial fails with a traceback."""
    code, lines = run("generate", "hi", "--model", tmp_path / "no-such-model", "--temperature", temperature)
    assert code == 2
    assert_one_line(lines, "--temperature", "0 (greedy) or at least 0.0001")


def test_huge_top_k_and_batch_size_still_generate(tiny_model_dir):
    args = ("--max-new-tokens", 2, "--temperature", 1, "--top-k", 2**70, "--batch-size", 2**70)
    code, lines = run("generate", "hi", "--model", tiny_model_dir, *args)
    assert code == 0, lines


# The chat template on a model without one.


def test_chat_on_a_model_without_a_chat_template_is_one_line(plain_model_dir):
    code, lines = run("generate", "hi", "--model", plain_model_dir, "--chat", "--max-new-tokens", 2)
    assert code == 2
    assert_one_line(lines, "--chat", "no chat template", "drop --chat")


def test_an_adapter_trained_with_a_chat_template_on_a_base_without_one_is_one_line(plain_model_dir, tmp_path):
    model = make_model("llama")
    adapter = make_adapter(model, "schedule", plan=[(0, 3)])
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(model, adapter))  # chat_template=True
    code, lines = run("generate", "hi", "--model", plain_model_dir, "--adapter", path, "--max-new-tokens", 2)
    assert code == 2
    assert_one_line(lines, "--chat", "no chat template", "--no-chat")
    code, lines = run("generate", "hi", "--model", plain_model_dir, "--adapter", path, "--no-chat", "--max-new-tokens", 2)
    assert code == 0, lines


def test_messages_rows_on_a_model_without_a_chat_template_name_the_row(plain_model_dir, tmp_path):
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rows = [{"messages": chat}, {"messages": chat}]
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "preds.jsonl"
    code, lines = run("generate", "--model", plain_model_dir, "--input", data, "--output", out, "--max-new-tokens", 2)
    assert code == 2
    assert_one_line(lines, "rows.jsonl:1", "messages need a chat template", "the model has none")
    assert not out.exists()


def test_eval_chat_on_a_model_without_a_chat_template_is_one_line(plain_model_dir, tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p ->", "completion": " c"}])
    out = tmp_path / "preds.jsonl"
    code, lines = run("eval", "--model", plain_model_dir, "--data", data, "--chat", "-o", out, "--max-new-tokens", 2)
    assert code == 2
    assert_one_line(lines, "--chat", "no chat template")
    assert not out.exists()


def test_a_plain_prompt_on_a_model_without_a_chat_template_still_generates(plain_model_dir):
    code, lines = run("generate", "hi", "--model", plain_model_dir, "--max-new-tokens", 2)
    assert code == 0, lines
