"""From a request's job events to what the client gets: one JSON body, or server-sent events as they come.

Each request's jobs report onto the request's event loop (:func:`event_sink`). A client that goes
away is noticed while its request waits, not only when the next token fails to send: a watcher
reads the connection for ``http.disconnect`` and cancels the jobs, which frees their rows in the
next round of the decode loop (vLLM races its handlers against the disconnect the same way).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request

from .job import Event, Job
from .protocol import (
    ApiError,
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionResponse,
    Delta,
    Usage,
    new_id,
    now,
)


def event_sink(queue: asyncio.Queue) -> Callable[[Event], None]:
    """A function the decode loop's thread calls to hand an event to this loop's ``queue``."""
    loop = asyncio.get_running_loop()
    return lambda event: loop.call_soon_threadsafe(queue.put_nowait, event)


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Reply:
    """The jobs of one request and how its answer is shaped (``chat`` or completion) for ``model``."""

    def __init__(self, request: Request, jobs: list[Job], queue: asyncio.Queue, model: str, chat: bool) -> None:
        self.request, self.jobs, self.queue, self.model, self.chat = request, jobs, queue, model, chat
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = now()
        self.usage = Usage()

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancelled = True

    async def _events(self) -> AsyncIterator[Event]:
        """Every event until each job has finished; cancels the jobs if the client leaves first."""
        watcher = asyncio.ensure_future(_disconnected(self.request))
        getter = None
        left = len(self.jobs)
        try:
            while left:
                getter = asyncio.ensure_future(self.queue.get())
                await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    return  # the client went away
                event = getter.result()
                if event.error is not None:
                    raise ApiError(500, event.error, type="server_error", code="generation_failed")
                if event.final:
                    left -= 1
                    self.usage.add(event.prompt_tokens, event.completion_tokens)
                yield event
        finally:
            for task in (watcher, getter):
                if task is not None and not task.done():
                    task.cancel()
            self.cancel()

    async def body(self) -> dict | None:
        """The whole answer as OpenAI's JSON (None if the client left before it was ready)."""
        texts, reasons = [""] * len(self.jobs), [None] * len(self.jobs)
        finished = 0
        async for event in self._events():
            texts[event.index] += event.text
            if event.final:
                reasons[event.index] = event.finish_reason
                finished += 1
        if finished < len(self.jobs):
            return None
        if self.chat:
            choices = [
                ChatChoice(index=i, message=AssistantMessage(content=t), finish_reason=r)
                for i, (t, r) in enumerate(zip(texts, reasons))
            ]
            return ChatCompletionResponse(
                id=self.id, created=self.created, model=self.model, choices=choices, usage=self.usage
            ).model_dump()
        choices = [CompletionChoice(index=i, text=t, finish_reason=r) for i, (t, r) in enumerate(zip(texts, reasons))]
        return CompletionResponse(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=self.usage
        ).model_dump()

    async def stream(self, include_usage: bool) -> AsyncIterator[str]:
        """Server-sent events: one chunk per piece of text, the finish, usage if asked, then ``[DONE]``."""
        try:
            if self.chat:
                yield self._chunk(
                    [ChatChunkChoice(index=i, delta=Delta(role="assistant", content="")) for i in range(len(self.jobs))]
                )
            async for event in self._events():
                if event.text or event.final:
                    yield self._piece(event)
            if include_usage:
                yield self._chunk([], usage=self.usage)
        except ApiError as exc:  # the status line has gone out: the error travels as an event, as vLLM sends it
            yield f"data: {json.dumps(exc.body())}\n\n"
        yield "data: [DONE]\n\n"

    def _piece(self, event: Event) -> str:
        if self.chat:
            delta = Delta(content=event.text) if event.text else Delta()
            return self._chunk([ChatChunkChoice(index=event.index, delta=delta, finish_reason=event.finish_reason)])
        return self._chunk([CompletionChoice(index=event.index, text=event.text, finish_reason=event.finish_reason)])

    def _chunk(self, choices: list, usage: Usage | None = None) -> str:
        kind = ChatCompletionChunk if self.chat else CompletionResponse
        chunk = kind(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage)
        return f"data: {chunk.model_dump_json()}\n\n"
