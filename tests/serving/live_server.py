"""Servers the serving tests start: the real app under uvicorn, in a thread, on a free loopback port.

Tests talk to them with the real ``openai`` client (and raw HTTP for what a client library would
refuse to send). ``frozen()`` holds the decode loop between two rounds, so that requests sent
meanwhile are admitted together when it lets go: batches are made on purpose, not by timing.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
import time

import pytest
import torch
from support import info_for, make_adapter, perturb
from tiny import make_model

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from solo_cli.engine.adapter_file import save_adapter  # noqa: E402
from solo_cli.serving.config import ServeConfig  # noqa: E402
from solo_cli.serving.server import bind, build_service, uvicorn_server  # noqa: E402

# what every test server runs with: the suite's torch threads (the server would take one fewer, process-wide)
LOCAL = {"port": 0, "dtype": "float32", "device": "cpu", "threads": torch.get_num_threads()}

# three adapters that differ in every way a slot can: plan, rank, gate and source norm
ADAPTERS = {
    "a1": {"seed": 1, "gate": "learned", "rank": 4, "source_norm": "none"},
    "a2": {"seed": 2, "gate": "schedule", "rank": 2, "source_norm": "rms", "plan": [(0, 2), (1, 3), (-1, 1)]},
    "a3": {"seed": 3, "gate": "zero-init", "rank": 3, "source_norm": "rms", "plan": [(0, 3)]},
}


def write_adapter(folder, name: str, model=None, arch: str = "llama"):
    """A perturbed adapter file (it changes the output) for the tiny model of ``arch``."""
    model = model if model is not None else make_model(arch)
    spec = dict(ADAPTERS[name])
    adapter = perturb(make_adapter(model, **spec), scale=0.5)
    return save_adapter(folder / f"{name}.safetensors", adapter, info_for(model, adapter))


class LiveServer:
    """``solo serve``'s app on 127.0.0.1:<free port> in a background thread; ``stop()`` ends it."""

    def __init__(self, config: ServeConfig) -> None:
        self.service = build_service(config.validate())
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn_server(self.service)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.server.started, "the server did not start"

    def client(self, **kwargs) -> openai.OpenAI:
        kwargs.setdefault("api_key", "unused")
        return openai.OpenAI(base_url=f"{self.url}/v1", max_retries=0, timeout=60, **kwargs)

    def raw(self, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None):
        """(status, headers, parsed JSON or text) of one plain HTTP request."""
        payload = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=payload, headers={"Content-Type": "application/json", **(headers or {})})
            response = connection.getresponse()
            text = response.read().decode()
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = text
            return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed
        finally:
            connection.close()

    @contextlib.contextmanager
    def frozen(self):
        """Hold the decode loop between rounds; requests sent meanwhile are admitted together afterwards."""
        release, holding = threading.Event(), threading.Event()

        def hold():
            holding.set()
            release.wait(30)

        self.service.scheduler.call(hold)
        assert holding.wait(30)
        try:
            yield
        finally:
            release.set()

    def wait_for(self, condition, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive()
