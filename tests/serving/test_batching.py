"""Many adapters in one batch, and requests joining a batch that is already decoding.

Greedy output of every request is the same alone, in a batch of its adapter only, and in a batch
mixing every adapter and the bare base; and it is what ``solo generate`` writes with that adapter.
"""

from __future__ import annotations

import threading

import pytest

from solo_cli.engine.adapter import attach
from solo_cli.engine.adapter_file import load_adapter
from solo_cli.engine.models import load_model
from solo_cli.inference.generation import GenerationSettings, generate

# Greedy tokens of a batch and of one row alone agree when the two best logits are further apart than the
# rounding of float32 sums grouped another way (~1e-7 here). These prompts keep every step's gap above 1e-3
# with the base and a1-a3 (8 tokens on the tiny Llama), so no CPU's rounding can swap two tokens.
PROMPTS = ["priceRange[cheap]", "eatType[coffee shop]", "Café Adriatic", "The Eagle is"]
TOKENS = 8


@pytest.fixture(scope="module")
def expected(tiny_model_dir, adapter_files, server):
    """What `solo generate` writes for every prompt with every adapter and with none (greedy)."""
    loaded = load_model(tiny_model_dir)
    settings = GenerationSettings(max_new_tokens=TOKENS)
    texts = {server.service.base_id: generate(loaded.model, loaded.tokenizer, PROMPTS, settings, chat=False, batch_size=1)}
    for name, path in adapter_files.items():
        handle = attach(loaded.model, load_adapter(path)[0])
        texts[name] = generate(loaded.model, loaded.tokenizer, PROMPTS, settings, chat=False, batch_size=1)
        handle.detach()
    return texts


def _together(live, asks: list[dict]) -> list[str]:
    """Send every request while the decode loop is held, so that all of them are admitted into one batch."""
    client, texts = live.client(), [None] * len(asks)

    def send(i):
        texts[i] = client.completions.create(max_tokens=TOKENS, temperature=0, **asks[i]).choices[0].text

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(asks))]
    with live.frozen():
        for thread in threads:
            thread.start()
        live.wait_for(lambda: live.service.scheduler.load["waiting"] == len(asks))
    for thread in threads:
        thread.join(60)
    return texts


def test_greedy_output_is_the_same_alone_in_one_adapters_batch_in_a_mixed_batch_and_in_solo_generate(server, expected):
    models = list(expected)  # the base and a1, a2, a3
    client = server.client()
    for model in models:
        alone = [
            client.completions.create(model=model, prompt=p, max_tokens=TOKENS, temperature=0).choices[0].text for p in PROMPTS
        ]
        assert alone == expected[model], model
        assert _together(server, [{"model": model, "prompt": p} for p in PROMPTS]) == expected[model], model
    asks = [{"model": m, "prompt": p} for p in PROMPTS for m in models]  # 16 rows, 4 adapters (one the base) interleaved
    mixed = _together(server, asks)
    assert mixed == [expected[a["model"]][PROMPTS.index(a["prompt"])] for a in asks]
    assert len({tuple(expected[m]) for m in models}) == len(models)  # every adapter really changes the output


def test_adapter_scale_0_is_the_base_exactly_even_in_a_mixed_batch(server, expected):
    base = server.service.base_id
    asks = [{"model": "a2", "prompt": p, "extra_body": {"adapter_scale": 0}} for p in PROMPTS]
    asks += [{"model": "a2", "prompt": p} for p in PROMPTS]
    texts = _together(server, asks)
    assert texts[: len(PROMPTS)] == expected[base]
    assert texts[len(PROMPTS) :] == expected["a2"]


def test_a_request_joins_a_running_batch_and_leaves_before_it_ends(server):
    client, finished = server.client(), []
    started = threading.Event()

    def long_stream():
        stream = client.completions.create(model="a1", prompt="hello", max_tokens=200, temperature=0, stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].text:
                started.set()
            if chunk.choices and chunk.choices[0].finish_reason:
                finished.append(("long", chunk.choices[0].finish_reason))

    runner = threading.Thread(target=long_stream)
    runner.start()
    assert started.wait(60)
    assert server.service.scheduler.load["running"] == 1
    short = client.completions.create(model="a3", prompt="The Eagle", max_tokens=2, temperature=0)
    finished.append(("short", short.choices[0].finish_reason))
    runner.join(120)
    assert finished == [("short", "length"), ("long", "length")]  # 2 tokens joined and left while 200 ran


def test_a_chat_answer_is_what_solo_generate_chat_writes(server, tiny_model_dir, adapter_files):
    loaded = load_model(tiny_model_dir)
    messages = [[{"role": "user", "content": p}] for p in PROMPTS[:2]]
    handle = attach(loaded.model, load_adapter(adapter_files["a1"])[0])
    expected = generate(
        loaded.model, loaded.tokenizer, messages, GenerationSettings(max_new_tokens=TOKENS), chat=True, batch_size=1
    )
    handle.detach()
    client = server.client()
    answers = [
        client.chat.completions.create(model="a1", messages=m, max_tokens=TOKENS, temperature=0).choices[0].message.content
        for m in messages
    ]
    assert answers == expected
