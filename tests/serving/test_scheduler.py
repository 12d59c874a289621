"""The decode loop without HTTP, on architectures that place positions, caches and attention differently."""

from __future__ import annotations

import threading
import time

import pytest
from support import make_adapter, perturb
from tiny import make_model, make_tokenizer

from solo_cli.engine.adapter import attach
from solo_cli.engine.mixed import MixedAdapters
from solo_cli.errors import UsageError
from solo_cli.inference.generation import GenerationSettings, generate
from solo_cli.serving.job import Job
from solo_cli.serving.row_cache import check_model
from solo_cli.serving.scheduler import QueueFull, Scheduler

PROMPTS = ["priceRange[cheap]", "eatType[coffee shop]", "Café Adriatic", "The Eagle is"]  # see test_batching.py
TOKENS = 6


def _run(scheduler: Scheduler, jobs: list[Job], events: dict) -> None:
    scheduler.start()
    try:
        scheduler.submit(jobs)
        deadline = time.monotonic() + 60
        while len(events) < len(jobs) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        scheduler.stop()


# absolute positions (gpt2, opt's offset ones), parallel attention (falcon), soft-capping and a sliding window
# as wide as the context (gemma2); Llama's rotary positions are the HTTP tests' model. The prompts' greedy
# steps keep their two best logits at least 4.9e-4 apart on each (see test_batching.py).
@pytest.mark.parametrize("arch", ["gpt2", "opt", "falcon", "gemma2"])
def test_a_mixed_batch_of_rows_of_different_lengths_writes_what_generate_writes(arch):
    model, tokenizer = make_model(arch), make_tokenizer()
    check_model(model)
    adapter = perturb(make_adapter(model, seed=1))
    expected = {0: generate(model, tokenizer, PROMPTS, GenerationSettings(max_new_tokens=TOKENS), chat=False, batch_size=1)}
    handle = attach(model, adapter)
    expected[1] = generate(model, tokenizer, PROMPTS, GenerationSettings(max_new_tokens=TOKENS), chat=False, batch_size=1)
    handle.detach()
    mixed = MixedAdapters(model)
    slot = mixed.add(adapter)
    scheduler = Scheduler(model, tokenizer, mixed, max_batch=8, max_queue=8, context=256, tokenizer_lock=threading.Lock())
    events = {}

    def sink_for(key):
        return lambda event: events.__setitem__(key, event) if event.final else None

    jobs = [
        Job(tokenizer(p)["input_ids"], s, 1.0, TOKENS, 0.0, 1.0, 0, [], False, sink_for((i, k)))
        for i, p in enumerate(PROMPTS)
        for k, s in ((0, 0), (1, slot))
    ]
    _run(scheduler, jobs, events)
    mixed.close()
    assert {key: event.text for key, event in events.items()} == {(i, k): expected[k][i] for i in range(4) for k in (0, 1)}


def test_the_queue_refuses_what_it_cannot_hold_and_takes_nothing_of_it():
    model, tokenizer = make_model("llama"), make_tokenizer()
    scheduler = Scheduler(
        model, tokenizer, MixedAdapters(model), max_batch=1, max_queue=2, context=256, tokenizer_lock=threading.Lock()
    )
    job = Job([5, 6], 0, 1.0, 2, 0.0, 1.0, 0, [], False, lambda event: None)
    scheduler.submit([job])
    with pytest.raises(QueueFull):
        scheduler.submit([job, job])
    assert scheduler.load["waiting"] == 1


def test_a_model_whose_sliding_window_is_narrower_than_its_context_is_refused():
    model = make_model("mistral")
    model.config.sliding_window = 16  # keys further back than 16 positions are masked by column, not by position
    with pytest.raises(UsageError, match="sliding window"):
        check_model(model)
