"""The OpenAI API as the real client sees it: models, completions, chat, streaming, usage, stops, seeds."""

from __future__ import annotations

from tiny import make_tokenizer

from solo_cli.inference.generation import build_prompt


def test_models_lists_the_base_and_every_adapter_with_its_parent(server):
    models = {m.id: m for m in server.client().models.list().data}
    base = server.service.base_id
    assert set(models) == {base, "a1", "a2", "a3"}
    assert models[base].parent is None
    assert all(models[name].parent == base for name in ("a1", "a2", "a3"))


def test_a_completion_counts_its_tokens_and_says_why_it_stopped(server):
    result = server.client().completions.create(model="a1", prompt="The Eagle is", max_tokens=5, temperature=0)
    prompt_tokens = len(make_tokenizer()("The Eagle is")["input_ids"])
    assert result.object == "text_completion" and result.model == "a1"
    assert result.usage.prompt_tokens == prompt_tokens
    assert result.usage.completion_tokens == 5 or result.choices[0].finish_reason == "stop"
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.choices[0].finish_reason in ("length", "stop")


def test_chat_renders_the_chat_template_as_solo_generate_does(server):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello world"}]
    result = server.client().chat.completions.create(model="a2", messages=messages, max_tokens=3, temperature=0)
    rendered = build_prompt(make_tokenizer(), messages, chat=True)
    assert result.usage.prompt_tokens == len(make_tokenizer()(rendered, add_special_tokens=False)["input_ids"])
    assert result.choices[0].message.role == "assistant"
    assert result.object == "chat.completion"


def test_a_stream_sends_the_same_text_as_one_answer_then_usage(server):
    client = server.client()
    asked = {"model": "a1", "messages": [{"role": "user", "content": "The quick brown fox"}], "max_tokens": 12, "temperature": 0}
    whole = client.chat.completions.create(**asked)
    chunks = list(client.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_a_completion_stream_without_usage_ends_with_the_finish(server):
    chunks = list(server.client().completions.create(model="a3", prompt="hello", max_tokens=4, temperature=0, stream=True))
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")
    assert all(c.usage is None for c in chunks)


def test_stop_strings_cut_the_text_before_them_in_one_answer_and_in_a_stream(server):
    client = server.client()
    free = client.completions.create(model="a1", prompt="name[The Eagle]", max_tokens=16, temperature=0).choices[0].text
    stop = free[3:5]
    assert stop.strip(), free  # two characters of what it writes anyway
    cut = client.completions.create(model="a1", prompt="name[The Eagle]", max_tokens=16, temperature=0, stop=[stop])
    assert cut.choices[0].text == free[: free.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    chunks = client.completions.create(model="a1", prompt="name[The Eagle]", max_tokens=16, temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in chunks) == cut.choices[0].text


def test_a_seed_makes_sampling_repeat_and_another_seed_differs(server):
    client = server.client()
    asked = {"model": "a2", "prompt": "hello world", "max_tokens": 12, "temperature": 1.5, "top_p": 0.95}
    first = client.completions.create(**asked, seed=7).choices[0].text
    assert client.completions.create(**asked, seed=7).choices[0].text == first
    others = {client.completions.create(**asked, seed=s).choices[0].text for s in (8, 9, 10)}
    assert others != {first}


def test_several_prompts_are_several_choices_in_order(server):
    client = server.client()
    prompts = ["hello world", "The Eagle is"]
    both = client.completions.create(model="a1", prompt=prompts, max_tokens=4, temperature=0)
    alone = [client.completions.create(model="a1", prompt=p, max_tokens=4, temperature=0).choices[0].text for p in prompts]
    assert [c.index for c in both.choices] == [0, 1]
    assert [c.text for c in both.choices] == alone


def test_health_answers_without_a_key(make_server):
    live = make_server(api_key="secret")
    status, _, body = live.raw("GET", "/health")
    assert status == 200 and body["status"] == "ok"
