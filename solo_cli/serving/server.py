"""Starting a server: the model and adapters from a :class:`ServeConfig`, the listening socket, and uvicorn.

The socket is bound before the model loads (:func:`.config.bind`), so a port in use is one line at
once, not a minute later. On SIGTERM or SIGINT uvicorn stops accepting, lets running requests finish (at most
:data:`DRAIN_S` seconds), stops the decode loop and returns: the process then exits 0.
"""

from __future__ import annotations

import os
import signal
import socket
import threading

import torch

from ..engine.adapter_file import read_info
from ..engine.models import DEFAULT_MODEL, load_model
from .app import create_app
from .config import ServeConfig, bind  # noqa: F401 (bind: importable from here too)
from .row_cache import check_model
from .service import Service

DRAIN_S = 10


def decode_threads(config: ServeConfig) -> int:
    """torch's CPU threads for the model: ``threads``, else OMP_NUM_THREADS, else all of torch's default but one.

    The one left over is the HTTP side's (the event loop, the clients on the same machine). With every core
    in torch's thread pool, each of a forward's hundreds of parallel regions waits for whichever pool thread
    the OS paused to run the event loop: on 2 cores a decode step measured 4x slower with 2 threads than
    with 1 while another thread was busy. vLLM's CPU backend leaves cores to its frontend for the same reason.
    """
    if config.threads is not None:
        return config.threads
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    return max(1, torch.get_num_threads() - 1)


def build_service(config: ServeConfig) -> Service:
    """Load the base (``model``, else the first adapter's base, else the built-in) and every adapter of ``config``."""
    torch.set_num_threads(decode_threads(config))
    model = config.model
    if model is None:
        first = next(iter(config.adapters.values()), None)
        model = read_info(first).base_model if first else DEFAULT_MODEL
    loaded = load_model(
        model,
        revision=config.revision,
        dtype=config.dtype,
        device=config.device,
        trust_remote_code=config.trust_remote_code,
        quantize=config.quantize,
    )
    check_model(loaded.model)
    service = Service(loaded, config, base_id=model)
    for name, path in config.adapters.items():
        service.add_adapter(name, path)
    return service


def uvicorn_server(service: Service):
    """The uvicorn server of ``service``'s app (quiet: only warnings and errors are logged)."""
    import uvicorn

    app = create_app(service)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=DRAIN_S, lifespan="on")
    return uvicorn.Server(config)


def run(service: Service, sock: socket.socket) -> None:
    """Serve on ``sock`` until SIGTERM or SIGINT, then drain and return (never raising the signal)."""
    server = uvicorn_server(service)
    main = threading.current_thread() is threading.main_thread()
    # uvicorn re-raises the signal that stopped it once it is done; met by SIG_IGN, the command returns normally
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
