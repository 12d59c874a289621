"""The HTTP API's shapes: OpenAI's request and response schemas (pydantic), and its error.

Requests are checked here, field by field, so that a bad one is a 400 naming the field before
any token is generated. Fields OpenAI defines that solo serve does not implement are refused when
set to anything but their neutral value (``n`` above 1, penalties, logprobs), never silently
ignored; fields it does not know (other vendors' extensions) are ignored, as vLLM ignores them.
Extension: ``adapter_scale`` (>= 0, default 1) scales every connection of the request's adapter.
"""

from __future__ import annotations

import time
import uuid
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..inference.generation_settings import MIN_TEMPERATURE

MAX_STOPS = 8
MAX_STOP_CHARS = 256
MAX_PROMPTS = 16  # prompts in one /v1/completions request (each is a choice)


class ApiError(Exception):
    """A failure as OpenAI reports it: an HTTP status and ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return ErrorResponse(error=ErrorInfo(message=self.message, type=self.type, param=self.param, code=self.code)).model_dump()


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None  # OpenAI's identifiers: "model_not_found", "invalid_api_key", ...


class ErrorResponse(BaseModel):
    error: ErrorInfo


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Request):
    include_usage: bool = False


class _Sampling(_Request):
    """The fields completions and chat completions share."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    user: str | None = None
    adapter_scale: float = Field(1.0, ge=0, le=1e4, allow_inf_nan=False)

    @field_validator("temperature")
    @classmethod
    def _not_too_cold(cls, value: float) -> float:
        if 0 < value < MIN_TEMPERATURE:  # logits / 1e-38 overflow float32; sampling that cold is greedy anyway
            raise ValueError(f"must be 0 (greedy) or at least {MIN_TEMPERATURE:g}")
        return value

    @field_validator("n", "presence_penalty", "frequency_penalty")
    @classmethod
    def _neutral(cls, value, info):
        neutral = 1 if info.field_name == "n" else 0
        if value != neutral:
            raise ValueError(f"solo serve supports only {info.field_name} = {neutral}")
        return value

    @field_validator("stop")
    @classmethod
    def _bounded_stops(cls, value):
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > MAX_STOPS or any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"at most {MAX_STOPS} stop strings of at most {MAX_STOP_CHARS} characters")
        return value

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else [s for s in self.stop or [] if s]

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] = Field(description="a prompt, prompts (one choice each) or token ids")
    max_tokens: int | None = Field(16, ge=1, description="OpenAI's default for completions; null: as many as fit")
    echo: Literal[False] = False
    logprobs: None = None
    suffix: None = None

    @field_validator("prompt")
    @classmethod
    def _some_prompt(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("is empty; give a prompt")
        if isinstance(value, list) and isinstance(value[0], str) and len(value) > MAX_PROMPTS:
            raise ValueError(f"{len(value)} prompts; give at most {MAX_PROMPTS} in one request")
        return value

    def prompts(self) -> list[str] | list[list[int]]:
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(v, int) for v in self.prompt):
            return [list(self.prompt)]
        return list(self.prompt)


class TextPart(_Request):
    type: Literal["text"]
    text: str


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=1024)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: Literal[False] | None = None

    def rendered(self) -> list[dict]:
        """The messages as the chat template takes them (``developer`` is the newer name of ``system``)."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]

    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class LoadAdapterRequest(_Request):
    lora_name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$")
    lora_path: str = Field(min_length=1, max_length=4096)


class UnloadAdapterRequest(_Request):
    lora_name: str = Field(min_length=1, max_length=128)


# --- responses --------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, prompt: int, completion: int) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.total_tokens = self.prompt_tokens + self.completion_tokens


class _Choice(BaseModel):
    """What every choice of a response carries beside its text, message or delta."""

    index: int
    finish_reason: str | None = None
    logprobs: None = None


ChoiceT = TypeVar("ChoiceT", bound=_Choice)


class CompletionChoice(_Choice):
    text: str


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(_Choice):
    message: AssistantMessage


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(_Choice):
    delta: Delta


class _Response(BaseModel, Generic[ChoiceT]):
    """A completion response or chunk: ``object`` names its kind, ``choices`` are of that kind's choice."""

    id: str
    object: str
    created: int
    model: str
    choices: list[ChoiceT]
    usage: Usage | None = None


class CompletionResponse(_Response[CompletionChoice]):
    """A completion, or one chunk of a streamed one (OpenAI names both ``text_completion``)."""

    object: Literal["text_completion"] = "text_completion"


class ChatCompletionResponse(_Response[ChatChoice]):
    object: Literal["chat.completion"] = "chat.completion"
    usage: Usage  # a whole chat response always says what it used


class ChatCompletionChunk(_Response[ChatChunkChoice]):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "solo"
    root: str | None = None  # an adapter's file
    parent: str | None = None  # an adapter's base model id; None for the base itself


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
