"""The HTTP layer: a FastAPI app over a :class:`.service.Service`, OpenAI's routes and one error shape.

Every failure, whatever raised it (a bad field, malformed JSON, an unknown route, a full queue, a
bug), leaves through :func:`_error`, as ``{"error": {"message", "type", "param", "code"}}`` with
its status; nothing else writes an error. Before any route runs, :class:`Guard` checks the API
key and bounds the body, so an oversized or unauthorised request costs the server nothing.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from .protocol import (
    ApiError,
    ChatCompletionRequest,
    CompletionRequest,
    LoadAdapterRequest,
    ModelList,
    UnloadAdapterRequest,
)
from .responses import Reply, event_sink
from .service import Service

log = logging.getLogger("solo.serve")
OPEN_PATHS = ("/health",)  # answered without the API key


def create_app(service: Service) -> FastAPI:
    """The app serving ``service``: the decode loop runs from the app's startup to its shutdown."""

    @asynccontextmanager
    async def lifespan(app):
        service.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)

    app = FastAPI(title="solo serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    for kind in (ApiError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(kind, _error)
    app.add_middleware(Guard, api_key=service.config.api_key, max_body=service.config.max_body)
    _routes(app, service)
    return app


def _routes(app: FastAPI, service: Service) -> None:
    @app.get("/health")
    async def health():
        return {"status": "ok", **service.scheduler.load, "threads": torch.get_num_threads()}

    @app.get("/v1/models")
    async def models():
        return ModelList(data=service.cards()).model_dump()

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        slot = service.slot_for(body.model)
        return await _answer(service, request, body, slot, service.encode_completion(body), body.max_tokens, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        slot = service.slot_for(body.model)
        return await _answer(service, request, body, slot, [service.encode_chat(body)], body.token_limit(), chat=True)

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(body: LoadAdapterRequest):
        await service.load_adapter(body.lora_name, body.lora_path)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(body: UnloadAdapterRequest):
        service.unload_adapter(body.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")


async def _answer(service: Service, request: Request, body, slot: int, token_ids: list[list[int]], limit, *, chat: bool):
    queue: asyncio.Queue = asyncio.Queue()
    jobs = service.jobs(token_ids, body, slot, limit, event_sink(queue))
    service.submit(jobs)
    reply = Reply(request, jobs, queue, body.model, chat)
    if body.stream:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(reply.stream(body.include_usage()), media_type="text/event-stream", headers=headers)
    result = await reply.body()
    return JSONResponse(result) if result is not None else Response(status_code=499)  # nobody is there to read it


async def _error(request: Request, exc: Exception) -> JSONResponse:
    """The one place a failure becomes a response."""
    error = _as_api_error(exc)
    if error.status >= 500:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc if not isinstance(exc, ApiError) else None)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _as_api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestValidationError):
        return _validation_error(exc)
    if isinstance(exc, HTTPException):
        kinds = {404: "not_found", 405: "method_not_allowed"}
        return ApiError(exc.status_code, str(exc.detail), code=kinds.get(exc.status_code), headers=dict(exc.headers or {}))
    return ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error", code="internal_error")


def _validation_error(exc: RequestValidationError) -> ApiError:
    """pydantic's findings as one line naming each field; malformed JSON is said so."""
    problems, first = [], None
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        if error.get("type") == "json_invalid":
            return ApiError(
                400, f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'malformed')})", code="invalid_json"
            )
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
        first = first or where or None
    return ApiError(400, "; ".join(problems) or "invalid request", param=first)


class Guard:
    """ASGI middleware: the API key (``Authorization: Bearer KEY``) and the body size, before any route."""

    def __init__(self, app, api_key: str | None, max_body: int) -> None:
        self.app, self.api_key, self.max_body = app, api_key, max_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and scope["path"] not in OPEN_PATHS and not self._authorised(headers):
            error = ApiError(401, "wrong or missing API key; send Authorization: Bearer KEY", code="invalid_api_key")
            return await _send(send, error)
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body:
            return await _send(send, _too_large(self.max_body))
        body, more = bytearray(), True
        while more:  # read the whole body here (it is bounded), then hand it on
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                return await _send(send, _too_large(self.max_body))
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def _authorised(self, headers: dict) -> bool:
        given = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, key = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(key.strip().encode(), self.api_key.encode())


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is over {limit} bytes (solo serve --max-body)", code="request_too_large")


async def _send(send, error: ApiError) -> None:
    response = JSONResponse(error.body(), status_code=error.status, headers=error.headers)
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})
