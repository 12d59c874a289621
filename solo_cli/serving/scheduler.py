"""Continuous batching: the decode loop, in one background thread.

Each round of the loop runs what was asked between forwards (loading or unloading an adapter),
admits waiting jobs into free rows, then runs ONE forward over every active row for one token
each. A job is admitted by prefilling its prompt on its own (batch 1, no padding: a prompt's
first token does not depend on what else is running) and copying that cache into a free row of
the batch's :class:`.row_cache.RowCache`. A row leaves as soon as its job finishes or its client
goes away, and a waiting job takes its place in the next round: nobody waits for the batch to end.
Each row runs its own adapter (:class:`solo_cli.engine.mixed.MixedAdapters`), so requests for
different adapters and for the bare base share every forward.

The queue is bounded: :meth:`Scheduler.submit` raises :class:`QueueFull` instead of waiting.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections import deque
from concurrent.futures import Future

import torch
from transformers.cache_utils import DynamicCache

from ..engine.mixed import MixedAdapters
from .job import Event, Job
from .row_cache import RowCache
from .sampling import make_generator, next_tokens
from .text import TextStream

log = logging.getLogger("solo.serve")


class QueueFull(Exception):
    """Every row is busy and the queue holds as many jobs as it may."""


class Stopping(QueueFull):
    """The loop is stopping: it takes no more jobs."""


class Scheduler:
    """The decode loop over ``model`` with the adapters of ``mixed``; ``tokenizer_lock`` guards the tokenizer."""

    def __init__(
        self,
        model,
        tokenizer,
        mixed: MixedAdapters,
        *,
        max_batch: int,
        max_queue: int,
        context: int | None,
        tokenizer_lock: threading.Lock,
    ) -> None:
        self.model, self.tokenizer, self.mixed = model, tokenizer, mixed
        self.max_batch, self.max_queue, self.context = max_batch, max_queue, context
        self.tokenizer_lock = tokenizer_lock
        self.device = next(model.parameters()).device
        self.eos = _eos_ids(model, tokenizer)
        self.cache = RowCache(max_batch, context or 1 << 20)
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"  # transformers renamed it in 5.2x
        self._keep_last = "logits_to_keep" in params
        self._waiting: deque[Job] = deque()
        self._active: list[Job] = []
        self._controls: deque[tuple] = deque()
        self._retiring: set[int] = set()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- the other threads' side -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="solo-serve-decode", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current round, fail every job still queued or running, and end the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, jobs: list[Job]) -> None:
        """Queue ``jobs`` (one request's prompts) together, or raise :class:`QueueFull` and queue none."""
        with self._cond:
            if self._stopping:
                raise Stopping("the server is shutting down")
            if len(self._waiting) + len(jobs) > self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are waiting, the queue holds {self.max_queue}")
            self._waiting.extend(jobs)
            self._cond.notify_all()

    def call(self, fn) -> Future:
        """Run ``fn()`` on the loop's thread between two forwards; the future holds its result."""
        future: Future = Future()
        with self._cond:
            if self._stopping:
                future.set_exception(RuntimeError("the server is shutting down"))
                return future
            self._controls.append((fn, future))
            self._cond.notify_all()
        return future

    def retire(self, slot: int) -> None:
        """Empty ``slot`` once no queued or running job uses it any more (an unloaded adapter's jobs finish first)."""
        self.call(lambda: self._retiring.add(slot))

    @property
    def load(self) -> dict:
        """How busy it is: running rows and queued jobs."""
        return {"running": len(self._active), "waiting": len(self._waiting), "max_batch": self.max_batch}

    # --- the loop's thread ---------------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while self._next_round():
                try:
                    self._admit()
                    if self._active:
                        self._decode()
                    self._drop_finished()
                    self._retire_unused()
                except Exception as exc:  # the running jobs fail; the loop, and the server, go on
                    log.exception("decode round failed")
                    self._fail_running(f"generation failed: {type(exc).__name__}: {exc}")
        self._fail_all("the server is shutting down")

    def _next_round(self) -> bool:
        """Wait until there is work; run the calls queued for between forwards. False: stop."""
        with self._cond:
            while not (self._stopping or self._waiting or self._active or self._controls):
                self._cond.wait()
            if self._stopping:
                return False
            controls, self._controls = list(self._controls), deque()
            if any(job.cancelled for job in self._waiting):  # their clients left: their places in the queue free up
                self._waiting = deque(job for job in self._waiting if not job.cancelled)
        for fn, future in controls:
            try:
                future.set_result(fn())
            except Exception as exc:  # handed to the caller, who reports it
                future.set_exception(exc)
        return True

    def _admit(self) -> None:
        while len(self._active) < self.max_batch:
            with self._cond:
                if not self._waiting:
                    return
                job = self._waiting.popleft()
            if job.cancelled:
                continue
            try:
                cache = self._prefill(job)
                if not job.done:
                    self.cache.insert(len(self._active), cache, job.length)
                    self._active.append(job)
            except Exception as exc:  # the job fails; the server and the other jobs go on
                log.exception("prefill failed")
                job.done = True
                job.report(Event(job.index, error=f"generation failed: {type(exc).__name__}: {exc}"))

    def _prefill(self, job: Job) -> DynamicCache:
        ids = torch.tensor([job.prompt_ids], device=self.device)
        length = ids.shape[1]
        cache = DynamicCache()
        self.mixed.use([job.slot], [job.scale])
        positions = torch.arange(length, device=self.device).unsqueeze(0)
        logits = self._forward(ids, torch.ones_like(ids), positions, cache)
        job.length = length
        job.text = TextStream(self.tokenizer, job.stops)
        job.generator = make_generator(job.seed, self.device) if job.temperature > 0 else None
        self._accept(job, next_tokens(logits, [job])[0])
        return cache

    def _decode(self) -> None:
        jobs = self._active
        lengths = torch.tensor([job.length for job in jobs], device=self.device)
        self.cache.step(lengths, max(job.length for job in jobs))
        mask = (torch.arange(self.cache.width, device=self.device).unsqueeze(0) <= lengths.unsqueeze(1)).long()
        ids = torch.tensor([[job.pending] for job in jobs], device=self.device)
        self.mixed.use([job.slot for job in jobs], [job.scale for job in jobs])
        logits = self._forward(ids, mask, lengths.unsqueeze(1), self.cache)
        for job, token in zip(jobs, next_tokens(logits, jobs)):
            job.length += 1
            if not job.cancelled:
                self._accept(job, token)

    def _forward(self, ids, mask, positions, cache) -> torch.Tensor:
        """The last position's logits (rows x vocabulary, float32) of one forward through the model."""
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "use_cache": True}
        kwargs[self._cache_arg] = cache
        if self._keep_last:
            kwargs["logits_to_keep"] = 1
        return self.model(**kwargs).logits[:, -1].float()

    def _accept(self, job: Job, token: int) -> None:
        """A job's new token: finish it (end of sequence, a stop string, its length) or report the new text."""
        job.tokens += 1
        job.pending = token
        if token in self.eos:
            return self._finish(job, "stop")
        with self.tokenizer_lock:
            job.text.add(token)
        if job.text.stopped:
            return self._finish(job, "stop")
        if job.tokens >= job.max_tokens or (self.context is not None and job.length + 1 >= self.context):
            return self._finish(job, "length")
        if job.stream:
            piece = job.text.take()
            if piece:
                job.report(Event(job.index, piece))

    def _finish(self, job: Job, reason: str) -> None:
        job.done = True
        with self.tokenizer_lock:
            job.text.finish()
        prompt = len(job.prompt_ids)
        job.report(Event(job.index, job.text.take(final=True), reason, prompt, job.tokens))

    def _drop_finished(self) -> None:
        """Rows whose job finished or was cancelled leave; the last row moves into each freed place."""
        for row in range(len(self._active) - 1, -1, -1):
            job = self._active[row]
            if not (job.done or job.cancelled):
                continue
            last = len(self._active) - 1
            if row != last:
                moved = self._active[last]
                self.cache.move(last, row, moved.length)
                self._active[row] = moved
            self._active.pop()
        if not self._active:
            self.cache.clear()

    def _retire_unused(self) -> None:
        if not self._retiring:
            return
        with self._cond:
            used = {job.slot for job in self._active} | {job.slot for job in self._waiting}
        for slot in sorted(self._retiring - used):
            self.mixed.remove(slot)
            self._retiring.discard(slot)

    def _fail_running(self, message: str) -> None:
        jobs, self._active = self._active, []
        self.cache.clear()
        for job in jobs:
            if not job.done:
                job.done = True
                job.report(Event(job.index, error=message))

    def _fail_all(self, message: str) -> None:
        with self._cond:
            jobs, self._waiting = [*self._active, *self._waiting], deque()
            controls, self._controls = list(self._controls), deque()
            self._active = []
        for _, future in controls:
            future.set_exception(RuntimeError(message))
        for job in jobs:
            if not job.done:
                job.done = True
                job.report(Event(job.index, error=message))


def _eos_ids(model, tokenizer) -> set[int]:
    """The tokens that end a sequence: the generation config's (as ``generate`` stops), else the tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = eos if isinstance(eos, (list, tuple)) else [eos]
    return {int(i) for i in ids if i is not None}
