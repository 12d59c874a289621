"""What `solo serve` runs: the model, its adapters, where it listens and how much it takes on. Torch-free,
so that bad flags and a port in use are refused before torch loads."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError, param
from ..files.outputs import is_export

ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
MAX_BATCH = 256  # rows decoding together; each holds its own key/value cache
MAX_BODY = 64 << 20


@dataclass
class ServeConfig:
    """The server's settings; :meth:`validate` refuses bad ones naming each parameter."""

    model: str | None = None  # default: the first adapter's base, else the built-in model
    adapters: dict[str, str] = field(default_factory=dict)  # name -> adapter file or run folder
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_batch: int = 16  # requests decoding together
    max_queue: int = 64  # requests waiting for a row; one more is answered 429
    max_tokens: int = 2048  # the most tokens one request may generate
    max_body: int = 1 << 20  # bytes of a request body
    threads: int | None = None  # torch's CPU threads for the model; None: see server.decode_threads
    dtype: str = "auto"
    device: str = "auto"
    quantize: str = "none"
    revision: str | None = None
    trust_remote_code: bool = False

    def validate(self) -> ServeConfig:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"{param('port')} {self.port}: must be between 0 and 65535 (0: any free port)")
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            if self.host != "localhost":
                problems.append(f"{param('host')} {self.host!r}: give an IP address (127.0.0.1, ::1, 0.0.0.0) or localhost")
        for name, value, top in (
            ("max_batch", self.max_batch, MAX_BATCH),
            ("max_queue", self.max_queue, 1 << 20),
            ("max_tokens", self.max_tokens, 1 << 24),
            ("max_body", self.max_body, MAX_BODY),
            ("threads", 1 if self.threads is None else self.threads, 1024),
        ):
            if not 1 <= value <= top:
                problems.append(f"{param(name)} {value}: must be between 1 and {top}")
        if self.api_key is not None and not self.api_key.strip():
            problems.append(f"{param('api_key')}: is empty; give a key, or leave it out to serve without one")
        for name in self.adapters:
            if not ADAPTER_NAME.match(name):
                problems.append(
                    f"{param('adapter')} {name!r}: an adapter's name is letters, digits and ._:@- (at most 128, "
                    "starting with a letter or digit)"
                )
        if self.model and is_export(self.model):  # its base would load without its connections: the bare base
            problems.append(
                f"{param('model')} {self.model}: is a `solo merge --export` folder; serve its base with its adapter: "
                f"{param('model')} BASE {param('adapter')} NAME={Path(self.model) / 'adapter.safetensors'}"
            )
        if problems:
            raise UsageError("; ".join(problems))
        return self


def adapter_spec(text: str) -> tuple[str, str]:
    """``NAME=PATH`` as (name, path); a bare ``PATH`` is named after its run folder (or its file's stem)."""
    name, sep, path = text.partition("=")
    if sep and name and path:
        return name, path
    if sep:
        raise UsageError(f"{param('adapter')} {text!r}: write NAME=PATH (the name requests give as their model)")
    where = Path(text)
    stem = where.parent.name if where.suffix == ".safetensors" else where.name
    return stem or text, text


def adapters_by_name(specs: list[str]) -> dict[str, str]:
    """Every ``--adapter`` spec as name -> path; a name given twice is refused."""
    found: dict[str, str] = {}
    for text in specs:
        name, path = adapter_spec(text)
        if name in found:
            raise UsageError(f"{param('adapter')} {name}: given twice; give each adapter its own name (NAME=PATH)")
        found[name] = path
    return found


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one), or a UsageError saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"{param('host')} {host} {param('port')} {port}: cannot listen there ({exc.strerror or exc}); "
            f"pick another {param('port')} (0: any free one)"
        ) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
