"""`solo serve` under load, on loopback: latency, throughput, mixed adapters, and malformed requests.

Starts `solo serve` on the built-in model with 4 adapters as a subprocess on 127.0.0.1, measures,
and stops it with SIGTERM. The adapters are fresh default ones (chain, rank 3, schedule gate at
t = 1, rms source norm) whose A is as initialised and whose B is drawn from N(0, 0.02), each with its
own seed: the shapes and cost of a trained adapter, without a training run. Measured with streamed
/v1/completions requests (greedy, --max-tokens each, one of 8 prompts), each client thread sending
its next request when its last one ends (--requests per thread, at least 8 per measurement):

- time to first token (TTFT), time per output token after the first (TPOT) and end-to-end latency,
  p50 and p99, and output tokens/s (all tokens / wall time), at concurrency 1, 4 and 16, for one
  adapter and for 4 adapters mixed (request i asks for adapter i mod 4);
- TPOT with an adapter against the bare base at concurrency 1 (alternating rounds, medians);
- a run of --flood requests at concurrency 16, one in ten malformed (bad JSON, bad fields, an
  unknown model, a prompt over the context): every good request answered (a 429 is retried after
  its Retry-After), no 5xx other than 429/503, and the server's RSS after it within 10% of before
  (measured after a warm-up at the same concurrency).

    python bench/serve.py            # writes bench/results/serve.json and serve.md
    python bench/serve.py --quick    # smoke check: 4 tokens, concurrency 1 and 4, 40 flood requests, no files
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

PROMPTS = [
    "Once upon a time, in a small village by the sea, there lived",
    "The most important thing to know about training neural networks is",
    "Here is a recipe for a simple tomato soup. First,",
    "The history of the bicycle begins in the early nineteenth century, when",
    "Dear team, I am writing to let you know that",
    "In Python, a list comprehension is a concise way to",
    "The old lighthouse keeper looked out at the storm and",
    "Photosynthesis is the process by which plants",
]
TARGETS = {
    "scaling": "tokens/s at concurrency 16 >= 4x concurrency 1 (one adapter)",
    "mixed": "4 mixed adapters at concurrency 16 >= 0.85x one adapter's tokens/s",
    "adapter_cost": "TPOT with an adapter <= 1.15x the bare base's at concurrency 1",
    "flood": "flood: no 5xx but 429/503, every good request answered, RSS within 10%",
}


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-tokens", type=int, default=64, help="tokens each request generates")
    parser.add_argument("--requests", type=int, default=3, help="requests per client thread at each concurrency")
    parser.add_argument("--rounds", type=int, default=3, help="alternating base/adapter rounds at concurrency 1")
    parser.add_argument("--flood", type=int, default=1000, help="requests of the malformed-traffic run")
    parser.add_argument("--threads", type=int, default=None, help="solo serve --threads (default: its own default)")
    parser.add_argument("--quick", action="store_true", help="smoke check: tiny settings, no files written")
    opts = parser.parse_args()
    opts.levels, opts.least = (1, 4, 16), 8
    if opts.quick:
        opts.max_tokens, opts.requests, opts.rounds, opts.flood, opts.levels = 4, 1, 1, 40, (1, 4)
        opts.least = 2
    return opts


def make_adapters(model: str, folder: Path, count: int = 4) -> dict[str, str]:
    """``count`` default adapters for ``model`` with random B (see the module's docstring), as files."""
    import torch

    from solo_cli.engine.adapter import AdapterConfig, SoloAdapter
    from solo_cli.engine.adapter_file import save_adapter
    from solo_cli.engine.adapter_header import AdapterInfo
    from solo_cli.engine.blocks import fingerprint
    from solo_cli.engine.models import load_model
    from solo_cli.engine.topology import parse_connections

    base = load_model(model).model
    fp = fingerprint(base)
    paths = {}
    for k in range(count):
        torch.manual_seed(k)
        config = AdapterConfig(parse_connections("chain", fp.num_blocks), 3, "schedule", 10, fp.hidden_size, source_norm="rms")
        adapter = SoloAdapter(config)
        with torch.no_grad():
            for conn in adapter.connections.values():
                conn.B.normal_(std=0.02)
                conn.set_gate(1.0)
        info = AdapterInfo(
            config=config,
            fingerprint=fp,
            base_model=model,
            base_revision=None,
            data_format="completion",
            chat_template=False,
            training={"bench": "random B, N(0, 0.02)"},
        )
        paths[f"s{k + 1}"] = str(save_adapter(folder / f"s{k + 1}.safetensors", adapter, info))
    return paths


class Server:
    """`solo serve` in a subprocess on 127.0.0.1 (a free port), stopped with SIGTERM; ``rss()`` reads its memory."""

    def __init__(self, model: str, adapters: dict[str, str], threads: int | None = None) -> None:
        command = [sys.executable, "-m", "solo_cli", "serve", "--model", model, "--port", "0", "--max-batch", "16"]
        command += ["--max-queue", "64"] + (["--threads", str(threads)] if threads else [])
        for name, path in adapters.items():
            command += ["--adapter", f"{name}={path}"]
        env = os.environ | {"PYTHONPATH": str(HERE.parent)}
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        self.log: list[str] = []
        threading.Thread(target=lambda: self.log.extend(self.proc.stderr), daemon=True).start()
        deadline = time.monotonic() + 600
        while self.proc.poll() is None and time.monotonic() < deadline:
            found = re.search(r"http://127\.0\.0\.1:(\d+)/v1", "".join(self.log))
            if found:
                self.port = int(found.group(1))
                return
            time.sleep(0.1)
        self.stop()
        raise SystemExit(f"solo serve did not start:\n{''.join(self.log)}")

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def post(port: int, path: str, body: bytes, stream: bool = False):
    """(status, headers, text or a list of (seconds, chunk) for a stream) of one request."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        if not stream or response.status != 200:
            return response.status, dict(response.getheaders()), response.read().decode(errors="replace")
        events = []
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append((time.perf_counter(), json.loads(line[6:])))
        return response.status, dict(response.getheaders()), events
    finally:
        connection.close()


def get(port: int, path: str) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path)
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def timed_request(port: int, model: str, prompt: str, max_tokens: int) -> dict:
    """One streamed greedy completion: its TTFT, TPOT, end-to-end seconds and output tokens."""
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    body["stream_options"] = {"include_usage": True}
    start = time.perf_counter()
    status, _, events = post(port, "/v1/completions", json.dumps(body).encode(), stream=True)
    if status != 200:
        raise RuntimeError(f"status {status}: {events}")
    texts = [t for t, e in events if e.get("choices") and e["choices"][0].get("text")]
    tokens = events[-1][1]["usage"]["completion_tokens"]
    first = texts[0] if texts else events[-1][0]
    end = events[-1][0]
    return {"ttft": first - start, "tpot": (end - first) / max(1, tokens - 1), "e2e": end - start, "tokens": tokens}


def level(port: int, models: list[str], concurrency: int, requests: int, max_tokens: int, least: int = 8) -> dict:
    """``concurrency`` threads sending ``requests`` requests each (``least`` in all), each thread its next when its
    last one ends; request i asks for models[i % len]."""
    total = max(least, concurrency * requests)
    results, lock, counter = [], threading.Lock(), iter(range(total))

    def client():
        for i in counter:
            one = timed_request(port, models[i % len(models)], PROMPTS[i % len(PROMPTS)], max_tokens)
            with lock:
                results.append(one)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return summarise(results, wall) | {"concurrency": concurrency, "models": models}


def summarise(results: list[dict], wall: float) -> dict:
    def pct(key, q):
        values = sorted(r[key] for r in results)
        return values[min(len(values) - 1, round(q * (len(values) - 1)))]

    out = {"requests": len(results), "tokens": sum(r["tokens"] for r in results), "wall_s": round(wall, 3)}
    out["tokens_per_s"] = round(out["tokens"] / wall, 2)
    for key in ("ttft", "tpot", "e2e"):
        out[f"{key}_p50_ms"] = round(1000 * pct(key, 0.5), 1)
        out[f"{key}_p99_ms"] = round(1000 * pct(key, 0.99), 1)
    return out


def adapter_cost(port: int, rounds: int, requests: int, max_tokens: int) -> dict:
    """Median TPOT of the bare base and of one adapter at concurrency 1, in alternating rounds."""
    tpot = {"base": [], "adapter": []}
    for _ in range(rounds):
        for name, model in (("base", BASE_ID[0]), ("adapter", "s1")):
            for i in range(requests):
                tpot[name].append(timed_request(port, model, PROMPTS[i % len(PROMPTS)], max_tokens)["tpot"])
    base, adapter = statistics.median(tpot["base"]), statistics.median(tpot["adapter"])
    return {"base_tpot_ms": round(1000 * base, 2), "adapter_tpot_ms": round(1000 * adapter, 2), "ratio": round(adapter / base, 3)}


BASE_ID = [""]  # the served base's id (the --model given), set by main


def malformed(i: int) -> tuple[bytes, int]:
    """The i-th malformed request body and the status it must get."""
    kinds = [
        (b'{"model": "s1", "prompt": ', 400),
        (json.dumps({"model": "s1", "prompt": "x", "max_tokens": -3}).encode(), 400),
        (json.dumps({"model": "s1", "prompt": 42, "temperature": "hot"}).encode(), 400),
        (json.dumps({"model": "no-such-adapter", "prompt": "x"}).encode(), 404),
        (json.dumps({"model": "s1", "prompt": "word " * 20000, "max_tokens": 4}).encode(), 400),
    ]
    return kinds[i % len(kinds)]


def flood(server: Server, count: int, max_tokens: int, concurrency: int = 16) -> dict:
    """``count`` requests, every tenth malformed, at ``concurrency``; statuses, answers and the RSS around it."""
    level(server.port, ["s1", "s2", "s3", "s4"], concurrency, 1, max_tokens, least=1)  # warm-up: the batch at full size
    rss_before = server.rss()
    statuses, answered, lock, counter = {}, [0], threading.Lock(), iter(range(count))
    wrong = []

    def client():
        for i in counter:
            if i % 10 == 9:
                body, expected = malformed(i // 10)
                status = post(server.port, "/v1/completions", body)[0]
                good = False
            else:
                asked = {
                    "model": f"s{i % 4 + 1}",
                    "prompt": PROMPTS[i % len(PROMPTS)],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                }
                body, expected, good = json.dumps(asked).encode(), 200, True
                while (status := post(server.port, "/v1/completions", body))[0] in (429, 503):
                    time.sleep(float(status[1].get("retry-after", 1)))
                status = status[0]
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                answered[0] += good and status == 200
                if status != expected:
                    wrong.append((i, status, expected))

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rss_after = server.rss()
    good = count - count // 10
    return {
        "requests": count,
        "good": good,
        "answered": answered[0],
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "unexpected": wrong[:10],
        "server_errors": sum(v for k, v in statuses.items() if k >= 500 and k != 503),
        "rss_before_mib": round(rss_before / 2**20, 1),
        "rss_after_mib": round(rss_after / 2**20, 1),
        "rss_change": round(rss_after / rss_before - 1, 4),
    }


def verdicts(results: dict) -> dict:
    one = {r["concurrency"]: r["tokens_per_s"] for r in results["one_adapter"]}
    four = {r["concurrency"]: r["tokens_per_s"] for r in results["four_adapters"]}
    top = max(one)
    f = results["flood"]
    return {
        "scaling": {"value": round(one[top] / one[1], 2), "pass": one[top] >= 4 * one[1], "at": top},
        "mixed": {"value": round(four[top] / one[top], 3), "pass": four[top] >= 0.85 * one[top], "at": top},
        "adapter_cost": {"value": results["adapter_cost"]["ratio"], "pass": results["adapter_cost"]["ratio"] <= 1.15},
        "flood": {
            "value": f"{f['answered']}/{f['good']} answered, {f['server_errors']} 5xx, RSS {100 * f['rss_change']:+.1f}%",
            "pass": f["answered"] == f["good"]
            and f["server_errors"] == 0
            and abs(f["rss_change"]) <= 0.10
            and not f["unexpected"],
        },
    }


def run(opts) -> dict:
    import torch

    folder = Path(tempfile.mkdtemp(prefix="solo-bench-serve-"))
    adapters = make_adapters(opts.model, folder)
    BASE_ID[0] = opts.model
    server = Server(opts.model, adapters, opts.threads)
    try:
        results = {"command": "python bench/serve.py " + " ".join(sys.argv[1:]), "model": opts.model}
        results["machine"] = {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
        }
        results["max_tokens"], results["requests_per_thread"] = opts.max_tokens, opts.requests
        results["server_threads"] = json.loads(get(server.port, "/health"))["threads"]
        level(server.port, ["s1"], 1, 1, opts.max_tokens, least=1)  # warm-up
        results["adapter_cost"] = adapter_cost(server.port, opts.rounds, max(2, opts.requests), opts.max_tokens)
        results["one_adapter"] = [level(server.port, ["s1"], c, opts.requests, opts.max_tokens, opts.least) for c in opts.levels]
        results["four_adapters"] = [
            level(server.port, ["s1", "s2", "s3", "s4"], c, opts.requests, opts.max_tokens, opts.least) for c in opts.levels
        ]
        results["flood"] = flood(server, opts.flood, min(16, opts.max_tokens))
    finally:
        results_exit = server.stop()
    results["exit_code"] = results_exit
    results["verdicts"] = verdicts(results)
    return results


def markdown(r: dict) -> str:
    lines = [f"# `solo serve` under load ({r['model']})", ""]
    lines += [
        f"Command: `{r['command']}`. Machine: {r['machine']['cores']} cores, torch {r['machine']['torch']}; "
        f"the server's model ran on {r['server_threads']} torch thread(s)."
    ]
    lines += [
        f"Streamed greedy /v1/completions of {r['max_tokens']} tokens; {r['requests_per_thread']} request(s) per client thread.",
        "",
    ]
    lines += [
        "| adapters | concurrency | tokens/s | TTFT p50 / p99 ms | TPOT p50 / p99 ms | e2e p50 / p99 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, key in (("one", "one_adapter"), ("4 mixed", "four_adapters")):
        for x in r[key]:
            lines.append(
                f"| {name} | {x['concurrency']} | {x['tokens_per_s']} | {x['ttft_p50_ms']} / {x['ttft_p99_ms']} | "
                f"{x['tpot_p50_ms']} / {x['tpot_p99_ms']} | {x['e2e_p50_ms']} / {x['e2e_p99_ms']} |"
            )
    c = r["adapter_cost"]
    lines += [
        "",
        f"TPOT at concurrency 1: bare base {c['base_tpot_ms']} ms, one adapter {c['adapter_tpot_ms']} ms ({c['ratio']}x).",
        "",
    ]
    f = r["flood"]
    lines += [
        f"Flood: {f['requests']} requests, {f['requests'] - f['good']} malformed; statuses {f['statuses']}; RSS {f['rss_before_mib']} -> {f['rss_after_mib']} MiB.",
        "",
    ]
    lines += ["| target | measured | met |", "| --- | --- | --- |"]
    for key, text in TARGETS.items():
        v = r["verdicts"][key]
        lines.append(f"| {text} | {v['value']} | {'yes' if v['pass'] else 'NO'} |")
    lines += ["", f"`solo serve` exited with {r['exit_code']} on SIGTERM."]
    return "\n".join(lines) + "\n"


def main() -> None:
    opts = options()
    results = run(opts)
    text = markdown(results)
    print(text)
    if not opts.quick:
        out = HERE / "results"
        (out / "serve.json").write_text(json.dumps(results, indent=2) + "\n")
        (out / "serve.md").write_text(text)


if __name__ == "__main__":
    main()
