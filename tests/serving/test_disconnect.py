"""A client that goes away frees its row at once, streaming or not, and the next request takes it."""

from __future__ import annotations

import json
import socket

import pytest


def _post(port: int, body: dict) -> socket.socket:
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    sock.sendall(head.encode() + payload)
    return sock


def _running_job(live):
    live.wait_for(lambda: live.service.scheduler.load["running"] == 1)
    return live.service.scheduler._active[0]


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_leaving_mid_generation_frees_its_row(make_server, stream):
    live = make_server(max_batch=1)
    sock = _post(live.port, {"model": "a1", "prompt": "hello", "max_tokens": 250, "temperature": 0, "stream": stream})
    job = _running_job(live)
    received = b""
    while stream and b"data: " not in received:  # the stream has begun
        received += sock.recv(4096)
    sock.close()
    live.wait_for(lambda: live.service.scheduler.load["running"] == 0)
    assert job.cancelled and job.tokens < 250  # it left early, not at its end
    after = live.client().completions.create(model="a2", prompt="hi", max_tokens=3, temperature=0)
    assert after.usage.completion_tokens >= 1


def test_a_client_leaving_while_queued_never_takes_a_row(make_server):
    live = make_server(max_batch=1)
    with live.frozen():
        sock = _post(live.port, {"model": "a1", "prompt": "hello", "max_tokens": 250, "stream": True})
        live.wait_for(lambda: live.service.scheduler.load["waiting"] == 1)
        job = live.service.scheduler._waiting[0]
        sock.close()
        live.wait_for(lambda: job.cancelled)
    live.wait_for(lambda: live.service.scheduler.load["waiting"] == 0)
    assert job.tokens == 0 and live.service.scheduler.load["running"] == 0
