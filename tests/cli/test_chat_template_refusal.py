"""A chat template that raises (Mistral, Llama 2, Gemma: jinja's raise_exception) is one line naming the row and
quoting the template, exit 2, in train (and --dry-run), eval and generate (--input and a single prompt)."""

import pickle

import pytest
from support import assert_one_line, run, write_jsonl
from tiny import make_tokenizer, save_tiny

from solo_cli.data.chat_template import TemplateRefused, render_chat

ALTERNATE = "Conversation roles must alternate user/assistant/user/assistant/..."
ROLES = "Only user and assistant roles are supported!"
NO_CHAT = "This is a base model: it has no chat format"
# Mistral's and Llama 2's checks, as their templates write them, around the tiny tokenizer's ChatML turns.
CHECKING = (
    "{% for m in messages %}"
    "{% if m['role'] not in ['user', 'assistant'] %}{{ raise_exception('" + ROLES + "') }}{% endif %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('" + ALTERNATE + "') }}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
REFUSING = "{{ raise_exception('" + NO_CHAT + "') }}"


def model_with_template(folder, template: str) -> str:
    save_tiny(folder)
    tokenizer = make_tokenizer()
    tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def checking_model(tmp_path_factory):
    return model_with_template(tmp_path_factory.mktemp("checking"), CHECKING)


@pytest.fixture(scope="module")
def refusing_model(tmp_path_factory):
    return model_with_template(tmp_path_factory.mktemp("refusing"), REFUSING)


def chat(*turns):
    return {"messages": [{"role": role, "content": text} for role, text in turns]}


GOOD = chat(("user", "name[Place 1] ->"), ("assistant", " Place 1 is a pub."))
TWO_USERS = chat(("user", "name[Place 2]"), ("user", "->"), ("assistant", " Place 2 is a pub."))
SYSTEM = chat(("system", "Be brief."), ("user", "name[Place 3] ->"), ("assistant", " Place 3 is a pub."))


@pytest.mark.parametrize("dry_run", [["--dry-run"], []])
def test_train_names_the_row_the_template_refuses(checking_model, tmp_path, dry_run):
    data = write_jsonl(tmp_path / "train.jsonl", [GOOD, GOOD, TWO_USERS] + [GOOD] * 5)
    code, lines = run("train", "--model", checking_model, "--data", data, "-o", tmp_path / "run", "--batch-size", 2, *dry_run)
    assert code == 2
    assert_one_line(lines, "train.jsonl:3", f'"{ALTERNATE}"')
    assert len(lines) == 1 and not (tmp_path / "run").exists()


def test_train_on_prompt_rows_quotes_a_template_that_refuses_every_conversation(refusing_model, tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", [{"prompt": "a ->", "completion": " b"}] * 4)
    code, lines = run("train", "--model", refusing_model, "--data", data, "-o", tmp_path / "run", "--dry-run")
    assert code == 2
    assert_one_line(lines, "train.jsonl:1", NO_CHAT)


def test_eval_names_the_row_in_the_loss_and_in_generation(checking_model, refusing_model, tmp_path):
    scored = write_jsonl(tmp_path / "eval.jsonl", [GOOD, SYSTEM, GOOD])
    code, lines = run("eval", "--model", checking_model, "--data", scored, "--max-new-tokens", 2)
    assert code == 2
    assert_one_line(lines, "eval.jsonl:2", ROLES)
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "a ->", "references": ["b"]}] * 2)
    code, lines = run("eval", "--model", refusing_model, "--data", prompts, "--chat", "--max-new-tokens", 2)
    assert code == 2
    assert_one_line(lines, "prompts.jsonl:1", NO_CHAT)


def test_generate_names_the_input_row_or_the_prompt(checking_model, refusing_model, tmp_path):
    rows = write_jsonl(tmp_path / "rows.jsonl", [GOOD, TWO_USERS])  # generated from: the turns before the reply
    preds = tmp_path / "preds.jsonl"
    code, lines = run("generate", "--model", checking_model, "--input", rows, "-o", preds, "--max-new-tokens", 2)
    assert code == 2
    assert_one_line(lines, "rows.jsonl:2", ALTERNATE)
    assert not preds.exists()
    code, lines = run("generate", "--model", refusing_model, "--chat", "--max-new-tokens", 2, "hello")
    assert code == 2
    assert_one_line(lines, "prompt: the model's chat template refused it", NO_CHAT)


def test_a_template_that_does_not_parse_and_a_refusal_across_processes():
    tokenizer = make_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }"
    with pytest.raises(TemplateRefused) as caught:
        render_chat(tokenizer, GOOD["messages"], where="rows.jsonl:4")
    assert caught.value.exit_code == 2
    assert caught.value.message.startswith("rows.jsonl:4: the model's chat template cannot be rendered (line 1: ")
    refusal = TemplateRefused(ALTERNATE).at_index(6)  # as a datasets.map worker (--num-proc) raises it
    again = pickle.loads(pickle.dumps(refusal))
    assert (again.reason, again.index, again.message) == (ALTERNATE, 6, refusal.message)
    assert again.at("train.jsonl:7").message.startswith("train.jsonl:7: the model's chat template refused it: \"Conv")
