"""The conversation behind `solo chat`: replies as `solo generate --chat` writes them, history within the context, commands."""

import dataclasses

import pytest
import torch
from support import info_for, make_adapter, perturb
from tiny import CHAT_TEMPLATE, make_model, make_tokenizer

from solo_cli import save_adapter
from solo_cli.errors import UsageError
from solo_cli.inference.chat import ChatSession
from solo_cli.inference.generation import GenerationSettings, build_prompt, generate
from solo_cli.inference.load import load_for_inference

GREEDY = GenerationSettings(max_new_tokens=6)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """Two adapters of the tiny Llama, and one of another base (a tiny Qwen2)."""
    folder = tmp_path_factory.mktemp("adapters")
    model = make_model("llama")
    paths = {}
    for name, seed in (("a", 0), ("b", 1)):
        adapter = perturb(make_adapter(model, seed=seed))
        paths[name] = str(save_adapter(folder / f"{name}.safetensors", adapter, info_for(model, adapter)))
    other = make_model("qwen2")
    adapter = perturb(make_adapter(other))
    paths["other"] = str(save_adapter(folder / "other.safetensors", adapter, info_for(other, adapter)))
    return paths


def session_for(model_dir, adapter=None, settings=GREEDY, **kwargs):
    target = load_for_inference(model_dir, adapter, dtype="float32", device="cpu")
    return ChatSession(target, settings, adapter=adapter, **kwargs)


def reply_to(session, messages, settings=GREEDY):
    """What `solo generate` writes for ``messages`` on the session's model as it is now."""
    return generate(session.model, session.tokenizer, [messages], settings, chat=True)[0]


def user(text):
    return {"role": "user", "content": text}


def test_the_first_reply_is_generate_chats_and_the_second_follows_the_first(tiny_model_dir, adapters):
    session = session_for(tiny_model_dir, adapters["a"])
    streamed = []
    first = session.handle("hi", streamed.append).reply
    assert first == generate(session.model, session.tokenizer, ["hi"], GREEDY, chat=True)[0]  # solo generate --chat "hi"
    assert "".join(streamed).startswith(first) and first
    second = session.handle("what?").reply
    assert second == reply_to(session, [user("hi"), {"role": "assistant", "content": first}, user("what?")])
    assert session.turns == [("hi", first), ("what?", second)]


def conversation_tokens(session, turns, message):
    history = [m for u, r in turns for m in (user(u), {"role": "assistant", "content": r})]
    rendered = build_prompt(session.tokenizer, [*history, user(message)], chat=True)
    return len(session.tokenizer(rendered, add_special_tokens=False)["input_ids"])


def test_the_oldest_turns_are_dropped_to_fit_the_context_with_a_note(tiny_model_dir):
    settings = GenerationSettings(max_new_tokens=4)  # the tiny model's context is 256: 252 tokens for the conversation
    session = session_for(tiny_model_dir, settings=settings)
    sent, dropped = [], 0
    for n in range(6):
        before = list(session.turns)
        message = f"name[Place {n}], eatType[coffee shop], food[French], area[riverside]"  # about 50 tokens a turn
        outcome = session.handle(message)
        sent.append(message)
        kept = session.turns[:-1]
        assert before[len(before) - len(kept) :] == kept  # the newest turns kept, in order
        assert conversation_tokens(session, kept, message) + 4 <= 256
        if len(kept) < len(before):  # no more dropped than needed, and a note says how many
            assert conversation_tokens(session, before[len(before) - len(kept) - 1 :], message) + 4 > 256
            count = len(before) - len(kept)
            note = f"history: dropped the oldest {count} turn{'s' if count > 1 else ''} to fit the model's context of 256 tokens"
            assert outcome.notes == [f"{note} ({len(kept)} kept)"]
            dropped += count
        else:
            assert outcome.notes == []
    assert dropped > 0 and len(session.turns) >= 2, (dropped, len(session.turns))
    assert [u for u, _ in session.turns] == sent[dropped:]
    history = [m for u, r in session.turns[:-1] for m in (user(u), {"role": "assistant", "content": r})]
    assert session.turns[-1][1] == reply_to(session, [*history, user(sent[-1])], settings)


def test_a_message_too_long_alone_is_refused_and_the_history_kept(tiny_model_dir):
    session = session_for(tiny_model_dir, settings=GenerationSettings(max_new_tokens=200))
    first = session.handle("hi").reply
    with pytest.raises(UsageError, match="the message: .* more than the model's context of 256 tokens"):
        session.handle("The Eagle is a French coffee shop by the riverside. " * 8)
    assert session.turns == [("hi", first)]


def test_reset_and_system(tiny_model_dir):
    session = session_for(tiny_model_dir)
    session.handle("hi")
    assert session.handle("/reset").notes == ["history cleared"]
    assert session.turns == []
    assert session.handle("/system You are terse.").notes == ["system prompt set"]
    reply = session.handle("hi").reply
    assert reply == reply_to(session, [{"role": "system", "content": "You are terse."}, user("hi")])
    session.handle("/reset")
    assert session.system == "You are terse."  # /reset keeps the system prompt
    session.handle("/system")
    assert session.system is None
    assert session.handle("hi").reply == reply_to(session, [user("hi")])


def test_scale_zero_and_adapter_off_answer_as_the_base(tiny_model_dir, adapters):
    base = session_for(tiny_model_dir).handle("hi").reply
    session = session_for(tiny_model_dir, adapters["a"])
    assert session.handle("hi").reply != base  # the adapter changes the reply
    assert session.handle("/scale 0").notes == ["adapter scale 0 (the base model exactly)"]
    session.handle("/reset")
    assert session.handle("hi").reply == base
    session.handle("/scale 1")
    session.handle("/adapter off")
    session.handle("/reset")
    assert session.target.handle is None
    assert session.handle("hi").reply == base


def test_another_adapter_replaces_the_first_and_one_for_another_base_is_refused(tiny_model_dir, adapters):
    session = session_for(tiny_model_dir, adapters["a"])
    with_a = reply_to(session, [user("hi")])
    outcome = session.handle(f"/adapter {adapters['b']}")
    assert outcome.notes[-1] == f"adapter {adapters['b']} attached (scale 1)"
    assert session.handle("hi").reply not in (with_a, "")
    with pytest.raises(UsageError, match="was trained on .* but --model"):
        session.handle(f"/adapter {adapters['other']}")
    assert session.adapter == adapters["b"] and session.target.handle.enabled  # the one attached stays
    with torch.no_grad():
        session.handle("/reset")
        assert session.handle("hi").reply == session_for(tiny_model_dir, adapters["b"]).handle("hi").reply


@pytest.mark.parametrize(
    "line, match",
    [
        ("/scale -1", "/scale -1: must be a number >= 0"),
        ("/scale nan", "/scale nan: must be a number >= 0"),
        ("/scale big", "/scale big: must be a number >= 0"),
        ("/frobnicate", "/frobnicate: no such command; /reset, /system, /adapter, /scale, /exit, /help"),
    ],
)
def test_a_bad_command_is_refused_and_changes_nothing(tiny_model_dir, adapters, line, match):
    session = session_for(tiny_model_dir, adapters["a"])
    session.handle("hi")
    with pytest.raises(UsageError, match=match):
        session.handle(line)
    assert session.target.handle.scale == 1.0 and len(session.turns) == 1


def test_scale_without_an_adapter_is_refused(tiny_model_dir):
    with pytest.raises(UsageError, match="no adapter is attached; attach one with /adapter PATH"):
        session_for(tiny_model_dir).handle("/scale 0.5")


def test_a_double_slash_sends_a_line_that_begins_with_a_slash(tiny_model_dir):
    session = session_for(tiny_model_dir)
    assert session.handle("//etc is a folder").reply == reply_to(session, [user("/etc is a folder")])
    assert session.handle("/exit").done


def test_a_model_without_a_chat_template_is_refused(tmp_path):
    make_model("llama").save_pretrained(tmp_path)
    make_tokenizer(chat=False).save_pretrained(tmp_path)
    with pytest.raises(UsageError, match="has no chat template, and solo chat needs one"):
        session_for(str(tmp_path))


def test_a_template_that_refuses_the_system_role_is_one_error(tmp_path):
    make_model("llama").save_pretrained(tmp_path)
    tokenizer = make_tokenizer()
    no_system = "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    tokenizer.chat_template = no_system + CHAT_TEMPLATE
    tokenizer.save_pretrained(tmp_path)
    session = session_for(str(tmp_path), system="Be brief.")
    with pytest.raises(UsageError, match='refused it: "System role not supported"; .*; /system alone removes the system prompt'):
        session.handle("hi")
    session.handle("/system")
    assert session.handle("hi").reply is not None


def test_an_adapter_trained_on_plain_prompts_gets_a_note(tiny_model_dir, adapters, tmp_path):
    model = make_model("llama")
    adapter = perturb(make_adapter(model))
    plain = dataclasses.replace(info_for(model, adapter), chat_template=False)
    path = str(save_adapter(tmp_path / "plain.safetensors", adapter, plain))
    assert session_for(tiny_model_dir, path).notes == [
        f"{path} was trained on plain prompts, without the chat template: in a chat it may answer unlike its training"
    ]
    session = session_for(tiny_model_dir, adapters["a"])
    assert session.notes == []
    assert session.handle(f"/adapter {path}").notes[-1].startswith(f"{path} was trained on plain prompts")
