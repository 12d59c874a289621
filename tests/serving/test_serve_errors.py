"""Every failure in OpenAI's shape and with its status, and the server serving on after each one."""

from __future__ import annotations

import threading

import pytest

openai = pytest.importorskip("openai")

SHAPE = {"message", "type", "param", "code"}


def _error(response) -> dict:
    status, _, body = response
    assert isinstance(body, dict) and set(body) == {"error"} and set(body["error"]) == SHAPE, body
    assert body["error"]["message"], body
    return body["error"]


def _still_serving(live) -> None:
    result = live.client().completions.create(model="a1", prompt="hello", max_tokens=2, temperature=0)
    assert result.usage.completion_tokens >= 1


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": "a1", "prompt": "x", "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"model": "a1", "prompt": "x", "temperature": "hot"}, "temperature", "valid number"),
        ({"model": "a1", "prompt": "x", "temperature": 1e-9}, "temperature", "greedy"),
        ({"model": "a1", "prompt": "x", "top_p": 0}, "top_p", "greater than 0"),
        ({"model": "a1", "prompt": "x", "adapter_scale": -1}, "adapter_scale", "greater than or equal to 0"),
        ({"model": "a1", "prompt": "x", "n": 2}, "n", "only n = 1"),
        ({"model": "a1", "prompt": "x", "presence_penalty": 0.5}, "presence_penalty", "only presence_penalty = 0"),
        ({"model": "a1", "prompt": []}, "prompt", "empty"),
        ({"model": "a1", "prompt": [5, 99999]}, "prompt", "outside the vocabulary"),
        ({"model": "a1", "prompt": "x", "stop": ["s"] * 9}, "stop", "at most 8 stop strings"),
        ({"model": "a1", "prompt": "x", "max_tokens": 10**6}, "max_tokens", "--max-tokens"),
        ({"model": "a1"}, "prompt", "Field required"),
        ({"prompt": "x"}, "model", "Field required"),
    ],
)
def test_bad_fields_are_400_naming_the_field(server, body, param, words):
    response = server.raw("POST", "/v1/completions", body)
    error = _error(response)
    assert response[0] == 400 and error["param"] == param and words in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_malformed_json_and_a_body_that_is_not_an_object_are_400(server):
    error = _error(response := server.raw("POST", "/v1/chat/completions", b'{"model": "a1", "messages": ['))
    assert response[0] == 400 and error["code"] == "invalid_json"
    assert server.raw("POST", "/v1/chat/completions", b"[1, 2]")[0] == 400
    _still_serving(server)


def test_chat_refuses_what_it_cannot_render(server):
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]}]
    assert server.raw("POST", "/v1/chat/completions", {"model": "a1", "messages": image})[0] == 400
    assert _error(server.raw("POST", "/v1/chat/completions", {"model": "a1", "messages": []}))["param"] == "messages"


def test_a_prompt_longer_than_the_context_is_400_with_openais_code(server):
    client = server.client()
    with pytest.raises(openai.BadRequestError) as raised:
        client.completions.create(model="a1", prompt="hello world " * 200, max_tokens=4)
    assert raised.value.status_code == 400 and raised.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):  # fits, but not with what it asks to generate
        client.completions.create(model="a1", prompt="hello world " * 20, max_tokens=250)
    _still_serving(server)


def test_an_unknown_model_or_route_is_404_and_a_wrong_method_405(server):
    with pytest.raises(openai.NotFoundError) as raised:
        server.client().chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.code == "model_not_found" and "a1" in raised.value.message  # it lists what it serves
    assert _error(server.raw("GET", "/v1/nothing-here"))["code"] == "not_found"
    assert server.raw("GET", "/v1/completions")[0] == 405


def test_a_body_over_the_limit_is_413_before_it_is_read(make_server):
    live = make_server(max_body=2048)
    response = live.raw("POST", "/v1/completions", {"model": "a1", "prompt": "x" * 4096})
    assert response[0] == 413 and _error(response)["code"] == "request_too_large"
    _still_serving(live)


def test_a_wrong_or_missing_key_is_401_and_the_right_one_serves(make_server):
    live = make_server(api_key="right")
    with pytest.raises(openai.AuthenticationError):
        live.client(api_key="wrong").models.list()
    assert _error(live.raw("GET", "/v1/models"))["code"] == "invalid_api_key"
    assert live.raw("POST", "/v1/load_lora_adapter", {"lora_name": "x", "lora_path": "/tmp"})[0] == 401
    assert {m.id for m in live.client(api_key="right").models.list().data} >= {"a1"}


def test_a_full_queue_is_429_with_retry_after_and_every_accepted_request_is_answered(make_server):
    live = make_server(max_batch=1, max_queue=2)
    client, answers = live.client(), []
    threads = [
        threading.Thread(target=lambda: answers.append(client.completions.create(model="a1", prompt="hi", max_tokens=2)))
        for _ in range(2)
    ]
    with live.frozen():
        for thread in threads:
            thread.start()
        live.wait_for(lambda: live.service.scheduler.load["waiting"] == 2)
        response = live.raw("POST", "/v1/completions", {"model": "a1", "prompt": "hi", "max_tokens": 2})
        assert response[0] == 429 and response[1]["retry-after"] == "1"
        assert _error(response)["code"] == "queue_full"
    for thread in threads:
        thread.join(60)
    assert len(answers) == 2
    _still_serving(live)


@pytest.mark.parametrize("failing", [0, 1], ids=["prefill", "decode"])
def test_a_failure_inside_the_model_is_500_in_shape_and_the_server_goes_on(make_server, monkeypatch, failing):
    live = make_server()
    scheduler = live.service.scheduler
    real = scheduler._forward
    calls = iter(range(100))

    def fail_once(*args):
        if next(calls) == failing:
            raise RuntimeError("boom")
        return real(*args)

    monkeypatch.setattr(scheduler, "_forward", fail_once)
    response = live.raw("POST", "/v1/completions", {"model": "a1", "prompt": "hi", "max_tokens": 2})
    assert response[0] == 500 and "boom" in _error(response)["message"]
    _still_serving(live)
