"""Fixtures of the serving tests: the adapters, one shared server, and servers of a test's own (live_server.py)."""

from __future__ import annotations

import pytest
from live_server import ADAPTERS, LOCAL, LiveServer, write_adapter
from tiny import make_model

from solo_cli.serving.config import ServeConfig


@pytest.fixture(scope="session")
def adapter_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-adapters")
    model = make_model("llama")
    return {name: write_adapter(folder, name, model) for name in ADAPTERS}


@pytest.fixture(scope="session")
def server(tiny_model_dir, adapter_files):
    """One server for the tests that do not change it: the tiny Llama with a1, a2 and a3."""
    live = LiveServer(ServeConfig(model=tiny_model_dir, adapters={n: str(p) for n, p in adapter_files.items()}, **LOCAL))
    yield live
    live.stop()


@pytest.fixture
def make_server(tiny_model_dir, adapter_files):
    """A server of its own for a test that changes it (limits, adapters, a key); stopped afterwards."""
    started = []

    def make(**settings):
        adapters = settings.pop("adapters", {n: str(p) for n, p in adapter_files.items()})
        live = LiveServer(ServeConfig(model=tiny_model_dir, adapters=adapters, **(LOCAL | settings)))
        started.append(live)
        return live

    yield make
    for live in started:
        live.stop()
