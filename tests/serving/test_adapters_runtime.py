"""Adapters loaded and unloaded while the server runs, with vLLM's endpoints and names."""

from __future__ import annotations

import threading

import pytest
from live_server import write_adapter

openai = pytest.importorskip("openai")


def _greedy(live, model: str, prompt: str = "The Eagle is", tokens: int = 8) -> str:
    return live.client().completions.create(model=model, prompt=prompt, max_tokens=tokens, temperature=0).choices[0].text


def test_an_adapter_loaded_at_run_time_serves_and_unloaded_is_gone(make_server, server, adapter_files):
    live = make_server(adapters={"a1": str(adapter_files["a1"])})
    with pytest.raises(openai.NotFoundError):
        _greedy(live, "hot")
    status, _, text = live.raw("POST", "/v1/load_lora_adapter", {"lora_name": "hot", "lora_path": str(adapter_files["a2"])})
    assert status == 200 and "hot" in text
    cards = {m.id: m for m in live.client().models.list().data}
    assert cards["hot"].parent == live.service.base_id
    assert _greedy(live, "hot") == _greedy(server, "a2") != _greedy(live, live.service.base_id)
    assert live.raw("POST", "/v1/unload_lora_adapter", {"lora_name": "hot"})[0] == 200
    with pytest.raises(openai.NotFoundError):
        _greedy(live, "hot")
    assert live.raw("POST", "/v1/unload_lora_adapter", {"lora_name": "hot"})[0] == 404
    assert live.raw("POST", "/v1/load_lora_adapter", {"lora_name": "hot", "lora_path": str(adapter_files["a3"])})[0] == 200
    assert _greedy(live, "hot") == _greedy(server, "a3")  # the name serves again, now the other file


def test_adapters_loaded_in_another_order_into_other_slots_write_the_same(make_server, server, adapter_files):
    live = make_server(adapters={})
    for name in ("a3", "a2"):
        assert live.raw("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(adapter_files[name])})[0] == 200
    for name in ("a2", "a3"):
        assert _greedy(live, name) == _greedy(server, name)


def test_loading_refuses_another_bases_adapter_a_taken_name_and_a_missing_file(make_server, adapter_files, tmp_path):
    live = make_server()
    foreign = write_adapter(tmp_path, "a1", arch="gpt2")  # same width, another architecture
    status, _, body = live.raw("POST", "/v1/load_lora_adapter", {"lora_name": "foreign", "lora_path": str(foreign)})
    assert status == 400 and "trained on" in body["error"]["message"] and body["error"]["param"] == "lora_path"
    for name, path in (("a1", adapter_files["a2"]), (live.service.base_id, adapter_files["a2"])):
        status, _, body = live.raw("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(path)})
        assert status == 400 and body["error"]["param"] == "lora_name"
    status, _, body = live.raw("POST", "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(tmp_path / "none")})
    assert status == 400 and "no such file" in body["error"]["message"]
    assert live.raw("POST", "/v1/load_lora_adapter", {"lora_name": "bad name!", "lora_path": "x"})[0] == 400
    assert {m.id for m in live.client().models.list().data} == {live.service.base_id, "a1", "a2", "a3"}


def test_unloading_lets_running_requests_finish_then_frees_the_slot(make_server, adapter_files):
    live = make_server(adapters={"a1": str(adapter_files["a1"])})
    slot = live.service.adapters.get("a1").slot
    started, result = threading.Event(), {}

    def stream():
        chunks = live.client().completions.create(model="a1", prompt="hello", max_tokens=60, temperature=0, stream=True)
        text = ""
        for chunk in chunks:
            text += chunk.choices[0].text if chunk.choices else ""
            started.set()
            result["finish"] = chunk.choices[0].finish_reason if chunk.choices else None
        result["text"] = text

    runner = threading.Thread(target=stream)
    runner.start()
    assert started.wait(60)
    assert live.raw("POST", "/v1/unload_lora_adapter", {"lora_name": "a1"})[0] == 200
    with pytest.raises(openai.NotFoundError):
        _greedy(live, "a1")
    runner.join(120)
    assert result["finish"] in ("length", "stop")
    live.wait_for(lambda: live.service.mixed._slots[slot] is None)  # emptied once nothing ran on it
