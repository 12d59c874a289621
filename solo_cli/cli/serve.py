"""`solo serve`: an OpenAI-compatible server of a base model and its adapters, many adapters in one batch."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from . import display
from .base import app, handle_errors
from .flags import flag_block
from .options import LoadFlags, adapter_path, quiet_transformers


def _adapters(specs: list[str] | None) -> dict[str, str]:
    """``--adapter NAME=PATH`` specs as name -> local path (a Hub repo id is downloaded first)."""
    from ..serving.config import adapters_by_name

    return {name: adapter_path(path) for name, path in adapters_by_name(list(specs or [])).items()}


@app.command()
@handle_errors
@flag_block("flags", LoadFlags)
def serve(
    *,
    flags: LoadFlags,
    adapter: Annotated[
        Optional[list[str]],
        typer.Option(
            metavar="NAME=PATH",
            help="An adapter, which requests ask for as their model NAME (repeatable; PATH alone: named after its folder).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free one).")] = 8000,
    api_key: Annotated[
        Optional[str], typer.Option(envvar="SOLO_API_KEY", help="Require Authorization: Bearer KEY (or set SOLO_API_KEY).")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Requests that decode together.")] = 16,
    max_queue: Annotated[int, typer.Option(help="Requests that may wait for a place; more get 429 and Retry-After.")] = 64,
    max_tokens: Annotated[int, typer.Option(help="The most tokens one request may generate.")] = 2048,
    max_body: Annotated[int, typer.Option(help="The largest request body, in bytes.")] = 1 << 20,
    threads: Annotated[
        Optional[int], typer.Option(help="CPU threads for the model (default: all but one, left to the HTTP side).")
    ] = None,
) -> None:
    """Serve a base model and its adapters over HTTP with OpenAI's API (/v1/completions, /v1/chat/completions).

    A request's "model" names an adapter (or the base's id for the bare base); requests for
    different adapters decode in the same batch. Adapters load and unload at run time
    (POST /v1/load_lora_adapter, /v1/unload_lora_adapter). SIGTERM or Ctrl+C: stop taking
    requests, finish the running ones, exit 0.
    """
    from ..serving.config import ServeConfig, bind

    config = ServeConfig(
        adapters=_adapters(adapter),
        host=host,
        port=port,
        api_key=api_key,
        max_batch=max_batch,
        max_queue=max_queue,
        max_tokens=max_tokens,
        max_body=max_body,
        threads=threads,
        **asdict(flags),
    ).validate()
    sock = bind(config.host, config.port)  # bad flags and a port in use fail now, before torch loads
    try:
        _serve(config, sock)
    finally:
        sock.close()


def _serve(config, sock) -> None:
    """Load the model and adapters, say where it listens, serve until a signal."""
    quiet_transformers()
    try:
        from ..serving.server import build_service, run
    except ImportError as exc:
        raise UsageError(f"solo serve needs {exc.name}; install it with pip install 'solo-cli[serve]'") from None
    from ..training.run import resolve_device

    config.device = str(resolve_device(config.device))
    service = build_service(config)
    where = sock.getsockname()
    names = [a.name for a in service.adapters.all()]
    display.line(
        f"serving {service.base_id}"
        + (f" and {len(names)} adapter(s): {', '.join(names)}" if names else "")
        + f" at http://{_url_host(where[0])}:{where[1]}/v1 (Ctrl+C to stop)",
        display.err,
    )
    run(service, sock)
    display.line("stopped", display.err)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
