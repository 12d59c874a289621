"""`solo chat` scripted through stdin: one reply per message on stdout, notes and errors on stderr."""

import pytest
from support import assert_one_line, info_for, make_adapter, perturb, run
from tiny import make_model, make_tokenizer
from typer.testing import CliRunner

from solo_cli import save_adapter
from solo_cli.cli import app, display

runner = CliRunner()
FAST = ("--max-new-tokens", "6")


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    model = make_model("llama")
    made = perturb(make_adapter(model))
    return str(save_adapter(tmp_path_factory.mktemp("chat") / "a.safetensors", made, info_for(model, made)))


def chat(model_dir, stdin, *args):
    result = runner.invoke(app, ["chat", "--model", str(model_dir), *FAST, *map(str, args)], input=stdin)
    assert "Traceback" not in result.output, result.output
    return result


def replies(result):
    return result.stdout.splitlines()


def generated(model_dir, prompt, *args):
    """What `solo generate --chat` writes for one prompt, as chat writes a reply: on one line."""
    result = runner.invoke(app, ["generate", prompt, "--chat", "--model", str(model_dir), *FAST, *map(str, args)])
    assert result.exit_code == 0, result.output
    return display.clean(result.stdout.removesuffix("\n"))


def test_one_reply_per_line_and_the_first_is_generate_chats(tiny_model_dir, adapter):
    result = chat(tiny_model_dir, "hi\n\nwhat?\n", "--adapter", adapter)
    assert result.exit_code == 0, result.output
    assert len(replies(result)) == 2  # the blank line is no message
    assert replies(result)[0] == generated(tiny_model_dir, "hi", "--adapter", adapter)
    assert result.stderr == ""


def test_commands_change_the_conversation_and_print_only_notes(tiny_model_dir, adapter):
    base = generated(tiny_model_dir, "hi")
    with_adapter = generated(tiny_model_dir, "hi", "--adapter", adapter)
    assert base != with_adapter
    script = "/scale 0\nhi\n/reset\n/scale 1\nhi\n/reset\n/adapter off\nhi\n/exit\nnever answered\n"
    result = chat(tiny_model_dir, script, "--adapter", adapter)
    assert result.exit_code == 0, result.output
    assert replies(result) == [base, with_adapter, base]
    notes = result.stderr.splitlines()
    assert "adapter scale 0 (the base model exactly)" in notes and "history cleared" in notes
    assert "adapter detached: the base model alone answers" in notes


def test_system_prompt_flag_and_command(tiny_model_dir):
    with_system = chat(tiny_model_dir, "hi\n", "--system", "Answer in French.")
    later = chat(tiny_model_dir, "/system Answer in French.\nhi\n")
    assert replies(with_system) == replies(later) and len(replies(later)) == 1
    assert replies(later) != [generated(tiny_model_dir, "hi")]


def test_history_trimming_is_noted_on_stderr(tiny_model_dir):
    message = "name[Place 1], eatType[coffee shop], food[French], area[riverside]"
    result = runner.invoke(app, ["chat", "--model", tiny_model_dir, "--max-new-tokens", "4"], input=f"{message}\n" * 6)
    assert result.exit_code == 0, result.output
    assert len(replies(result)) == 6
    assert "history: dropped the oldest" in result.stderr and "to fit the model's context of 256 tokens" in result.stderr


def test_a_bad_command_is_one_line_and_the_chat_goes_on(tiny_model_dir, adapter):
    result = chat(tiny_model_dir, "/scale minus-one\n/nope\nhi\n", "--adapter", adapter)
    errors = result.stderr.splitlines()
    assert errors == [
        "error: /scale minus-one: must be a number >= 0 (0 = the base model, 1 = as trained)",
        "error: /nope: no such command; /reset, /system, /adapter, /scale, /exit, /help (// sends a line starting with /)",
    ]
    assert replies(result) == [generated(tiny_model_dir, "hi", "--adapter", adapter)]  # still at scale 1
    assert result.exit_code == 2  # a script learns that a line failed


def test_an_adapter_that_does_not_exist_is_one_line(tiny_model_dir, tmp_path):
    result = chat(tiny_model_dir, f"/adapter {tmp_path / 'missing.safetensors'}\nhi\n")
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: ")
    assert str(tmp_path / "missing.safetensors") in result.stderr
    assert len(replies(result)) == 1 and result.exit_code == 2


def test_a_model_without_a_chat_template_is_refused_in_one_line(tmp_path):
    make_model("llama").save_pretrained(tmp_path)
    make_tokenizer(chat=False).save_pretrained(tmp_path)
    code, lines = run("chat", "--model", tmp_path, *FAST)
    assert code == 2
    assert_one_line(lines, "has no chat template, and solo chat needs one", "solo generate")


def test_bad_generation_flags_are_refused_before_loading(tmp_path):
    code, lines = run("chat", "--model", tmp_path / "no-such-model", "--temperature", "-1")
    assert code == 2
    assert_one_line(lines, "--temperature -1")
