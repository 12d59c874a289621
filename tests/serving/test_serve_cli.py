"""`solo serve` itself: a real process that serves, drains and exits 0 on SIGTERM; its flag errors in one line."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from support import assert_one_line, run

openai = pytest.importorskip("openai")


def _lines(stream, into: list) -> None:
    for line in stream:
        into.append(line)


def test_solo_serve_serves_then_on_sigterm_stops_taking_requests_finishes_the_running_one_and_exits_0(
    tiny_model_dir, adapter_files
):
    command = [sys.executable, "-m", "solo_cli", "serve", "--model", tiny_model_dir, "--adapter", f"a1={adapter_files['a1']}"]
    command += ["--port", "0", "--device", "cpu", "--dtype", "float32"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ | {"COLUMNS": "400"}
    )
    err: list[str] = []
    threading.Thread(target=_lines, args=(proc.stderr, err), daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while not any("/v1" in line for line in err) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        found = re.search(r"http://127\.0\.0\.1:(\d+)/v1", "".join(err))
        assert found, err
        port = int(found.group(1))
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=60)
        assert {m.id for m in client.models.list().data} == {tiny_model_dir, "a1"}
        stream = client.completions.create(model="a1", prompt="hello", max_tokens=120, temperature=0, stream=True)
        first = next(iter(stream))
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _accepts(port) and time.monotonic() < deadline:  # the listener closes first
            time.sleep(0.05)
        assert not _accepts(port)
        rest = list(stream)  # the running request still finishes
        assert first.choices and rest[-1].choices[0].finish_reason in ("length", "stop")
        assert proc.wait(timeout=60) == 0, "".join(err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    assert "Traceback" not in "".join(err) and "stopped" in err[-1]


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def test_a_port_in_use_is_one_line_before_the_model_loads(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        code, lines = run("serve", "--model", tmp_path / "no-model", "--port", taken.getsockname()[1])
    finally:
        taken.close()
    assert code == 2
    assert_one_line(lines, "--port", "cannot listen there")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--adapter", "=x"], ["--adapter", "NAME=PATH"]),
        (["--adapter", "a=x", "--adapter", "a=y"], ["given twice"]),
        (["--adapter", "bad name=x"], ["letters, digits"]),
        (["--max-batch", "0"], ["--max-batch 0"]),
        (["--port", "70000"], ["--port 70000"]),
        (["--host", "example.com"], ["--host"]),
        (["--api-key", " "], ["--api-key"]),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(args, needles):
    code, lines = run("serve", *args)
    assert code == 2
    assert_one_line(lines, *needles)


def test_an_adapter_for_another_base_is_refused_at_startup(tiny_model_dir, tmp_path):
    from live_server import write_adapter

    foreign = write_adapter(tmp_path, "a1", arch="gpt2")
    code, lines = run("serve", "--model", tiny_model_dir, "--adapter", f"x={foreign}", "--port", "0", "--device", "cpu")
    assert code == 2
    assert_one_line(lines, "trained on", "serve it with the model it was trained on")
