"""The service behind the HTTP layer: one base model, its adapters by name, and the decode loop.

Everything an endpoint does that is not HTTP lives here: which slot a request's ``model`` names,
turning prompts and messages into token ids (the chat template as ``solo generate --chat``
renders it), the token budget against the context, and loading or unloading adapters while the
loop runs. Failures a client can fix are :class:`ApiError`\\ s with OpenAI's status and shape.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable

from ..data.chat_template import TemplateRefused
from ..data.row_encoding import context_length
from ..engine.blocks import fingerprint
from ..engine.mixed import MixedAdapters
from ..engine.models import LoadedModel
from ..errors import SoloError, UsageError, param
from ..inference.generation import build_prompt
from .adapters import AdapterRegistry, ServedAdapter, read_checked
from .config import ServeConfig
from .job import Event, Job
from .protocol import ApiError, ChatCompletionRequest, CompletionRequest, ModelCard, now
from .scheduler import QueueFull, Scheduler, Stopping

RETRY_AFTER_S = 1


class Service:
    """A loaded model served with its adapters. ``start`` the loop before submitting jobs; ``stop`` ends it."""

    def __init__(self, loaded: LoadedModel, config: ServeConfig, base_id: str) -> None:
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        self.config, self.base_id = config, base_id
        self.created = now()
        self.context = context_length(self.model)
        self.vocab_size = self.model.get_input_embeddings().weight.shape[0]
        self.fingerprint = fingerprint(self.model)
        self.mixed = MixedAdapters(self.model)
        self.adapters = AdapterRegistry(base_id)
        self.tokenizer_lock = threading.Lock()
        self.scheduler = Scheduler(
            self.model,
            self.tokenizer,
            self.mixed,
            max_batch=config.max_batch,
            max_queue=config.max_queue,
            context=self.context,
            tokenizer_lock=self.tokenizer_lock,
        )

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()

    # --- adapters ------------------------------------------------------------------------------

    def add_adapter(self, name: str, path: str) -> ServedAdapter:
        """Load an adapter before the loop starts (``--adapter``); UsageError if it cannot be served."""
        try:
            self.adapters.reserve(name)
        except ValueError as exc:
            raise UsageError(f"{param('adapter')} {name}: {exc}") from None
        try:
            slot = self.mixed.add(read_checked(path, self.fingerprint, self.base_id))
        except BaseException:
            self.adapters.release(name)
            raise
        return self.adapters.put(name, path, slot)

    async def load_adapter(self, name: str, path: str) -> ServedAdapter:
        """``POST /v1/load_lora_adapter``: read and check the file off the event loop, slot it in between forwards."""
        try:
            self.adapters.reserve(name)
        except ValueError as exc:
            raise ApiError(400, str(exc), param="lora_name") from None
        try:
            adapter = await asyncio.to_thread(read_checked, path, self.fingerprint, self.base_id)
            slot = await asyncio.wrap_future(self.scheduler.call(lambda: self.mixed.add(adapter)))
        except SoloError as exc:
            self.adapters.release(name)
            raise ApiError(400, exc.message, param="lora_path") from None
        except BaseException:
            self.adapters.release(name)
            raise
        return self.adapters.put(name, path, slot)

    def unload_adapter(self, name: str) -> None:
        """``POST /v1/unload_lora_adapter``: the name goes now; its slot once its running requests finish."""
        served = self.adapters.pop(name)
        if served is None:
            raise ApiError(404, f"no adapter named {name!r} is loaded", param="lora_name", code="model_not_found")
        self.scheduler.retire(served.slot)

    def cards(self) -> list[ModelCard]:
        base = ModelCard(id=self.base_id, created=self.created, root=self.base_id)
        adapters = [ModelCard(id=a.name, created=a.created, root=a.path, parent=self.base_id) for a in self.adapters.all()]
        return [base, *adapters]

    def slot_for(self, model: str) -> int:
        """The slot that runs ``model`` (an adapter's name, or the base's id: slot 0); 404 for anything else."""
        if model == self.base_id:
            return 0
        served = self.adapters.get(model)
        if served is None:
            names = ", ".join([self.base_id, *(a.name for a in self.adapters.all())])
            raise ApiError(
                404, f"the model {model!r} does not exist here; use one of: {names}", param="model", code="model_not_found"
            )
        return served.slot

    # --- prompts --------------------------------------------------------------------------------

    def encode_completion(self, request: CompletionRequest) -> list[list[int]]:
        """The token ids of every prompt (text as ``solo generate`` tokenizes it, special tokens added)."""
        prompts = request.prompts()
        if prompts and isinstance(prompts[0], list):
            bad = [t for t in prompts[0] if not 0 <= t < self.vocab_size]
            if bad:
                raise ApiError(400, f"token id {bad[0]} is outside the vocabulary (0 to {self.vocab_size - 1})", param="prompt")
            return prompts
        with self.tokenizer_lock:
            return [self.tokenizer(text, add_special_tokens=True)["input_ids"] for text in prompts]

    def encode_chat(self, request: ChatCompletionRequest) -> list[int]:
        """The messages rendered by the chat template with a generation prompt, as ``solo generate --chat`` does."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ApiError(400, f"{self.base_id} has no chat template; send the text to /v1/completions", param="messages")
        try:
            with self.tokenizer_lock:
                text = build_prompt(self.tokenizer, request.rendered(), chat=True)
                return self.tokenizer(text, add_special_tokens=False)["input_ids"]
        except TemplateRefused as exc:  # the template's own checks (roles that must alternate, ...): render_chat
            raise ApiError(400, f"the chat template refused the messages: {exc.reason}", param="messages") from None

    def budget(self, prompt_tokens: int, asked: int | None, field: str = "prompt") -> int:
        """How many tokens a prompt (the request's ``field``) may generate: ``asked`` (or as many as fit), checked
        against the context."""
        cap = self.config.max_tokens
        if prompt_tokens == 0:
            raise ApiError(400, f"{field}: no tokens to continue; give some text", param=field)
        if asked is not None and asked > cap:
            raise ApiError(
                400, f"max_tokens {asked}: this server generates at most {cap} (solo serve --max-tokens)", param="max_tokens"
            )
        room = cap if self.context is None else self.context - prompt_tokens
        if room < 1 or (asked is not None and asked > room):
            wanted = prompt_tokens + (asked or 1)
            raise ApiError(
                400,
                f"this model's context is {self.context} tokens, but {wanted} were asked for "
                f"({prompt_tokens} in the prompt, {asked or 1} to generate); shorten the prompt or lower max_tokens",
                param=field if asked is None else "max_tokens",
                code="context_length_exceeded",
            )
        return asked if asked is not None else min(cap, room)

    def jobs(self, token_ids: list[list[int]], request, slot: int, limit: int | None, sink: Callable[[Event], None]) -> list[Job]:
        """One job per prompt for ``slot`` (see :meth:`slot_for`), each checked against the context, sampled as ``request`` says."""
        seed = request.seed if request.seed is not None else secrets.randbits(63)
        return [
            Job(
                prompt_ids=ids,
                slot=slot,
                scale=request.adapter_scale,
                max_tokens=self.budget(len(ids), limit, "messages" if isinstance(request, ChatCompletionRequest) else "prompt"),
                temperature=request.temperature,
                top_p=request.top_p,
                seed=seed + index,
                stops=request.stops(),
                stream=request.stream,
                sink=sink,
                index=index,
            )
            for index, ids in enumerate(token_ids)
        ]

    def submit(self, jobs: list[Job]) -> None:
        """Queue ``jobs``; a full queue is a 429 with Retry-After (OpenAI's clients wait and retry)."""
        try:
            self.scheduler.submit(jobs)
        except Stopping as exc:
            raise ApiError(503, str(exc), type="server_error", code="shutting_down", headers={"Retry-After": "5"}) from None
        except QueueFull as exc:
            raise ApiError(
                429,
                f"the server is busy ({exc}); retry in a moment",
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
