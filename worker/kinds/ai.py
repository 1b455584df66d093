"""`ai.chat`: a chat completion from any OpenAI-compatible server, streamed as output events.

Worker settings come from `TASKCAST_AI_*` (see `AISettings`), read at the first task, never at
import. Tokens become output events through an `OutputCoalescer`: the first at once, then at most
one Redis write per `flush_ms`. The openai client's own retries are off: every retry is a task
attempt, so watchers see RETRYING, then an `output_reset` before the next attempt's tokens.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskcast.core.limits import Tokens
from taskcast.worker.context import TaskContext
from taskcast.worker.errors import NonRetryableError
from taskcast.worker.kinds._coalesce import OutputCoalescer
from taskcast.worker.kinds._upstream import (
    Scrubber,
    UpstreamRejectedError,
    UpstreamUnavailableError,
    retry_after,
    shorten,
)
from taskcast.worker.registry import task

if TYPE_CHECKING:
    import openai
    from openai.types.chat import ChatCompletionMessageParam

log = logging.getLogger("taskcast.worker.ai")

#: Chat-completion parameters a payload may pass through unchanged. Left out on purpose: anything
#: that changes where the request goes or who pays (base_url, api_key, headers, service_tier), and
#: anything that changes the stream's shape (n, tools, functions, logprobs, audio, modalities).
PASS_THROUGH = (
    "top_p",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "logit_bias",
    "response_format",
    "max_completion_tokens",
    "reasoning_effort",
    "user",
)
RETRYABLE_STATUS = frozenset({408, 409, 429})  # plus every 5xx, as the openai SDK itself retries
CAUSES = {
    400: "the model server rejected the request as malformed",
    401: "authentication failed: check TASKCAST_AI_API_KEY",
    403: "permission denied: the API key may not use this model or endpoint",
    422: "the model server could not process the request",
}


class AISettings(BaseSettings):
    """How this worker process reaches its model server (`TASKCAST_AI_*` variables)."""

    model_config = SettingsConfigDict(env_prefix="TASKCAST_AI_", frozen=True, extra="ignore")

    api_key: SecretStr | None = Field(None, description="API key sent as a bearer token")
    base_url: str | None = Field(None, description="OpenAI-compatible base URL (default OpenAI)")
    model: str = Field("gpt-4o-mini", description="model used when a payload names none")
    request_timeout: float = Field(60.0, gt=0, description="seconds to connect or between chunks")
    # As many as a process has slots by default: the worker's slots already bound concurrency;
    # lower it to stay under a provider's concurrency limit.
    max_concurrency: int = Field(1000, ge=1, description="concurrent requests per worker process")
    flush_ms: int = Field(50, ge=0, description="longest wait before streamed tokens are written")
    # A token budget shared by every worker (core/limits.py Tokens), counted from the usage the
    # model server reports: "90000/m" for a provider's tokens-per-minute limit.
    tokens: str = Field("", description="token budget per key, 'N/m' or 'N/s' ('': none)")
    tokens_key: str = Field("{payload.model}", description="the budget's key template")
    tokens_reserve: int = Field(1, ge=1, description="tokens each attempt reserves until it ends")

    @field_validator("api_key", "base_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value


def _chat_schema(schema: dict[str, Any]) -> None:
    """The schema servers check: the allowlist closed, each turn's `role` and `content` named.

    The model itself keeps unknown keys (extra="allow") so that `params` names all of them in
    one error; the schema states the same rule, so a server refuses them at submit.
    """
    schema["properties"].update({name: {} for name in PASS_THROUGH})
    schema["additionalProperties"] = False
    schema["properties"]["messages"]["anyOf"][0]["items"] = {
        "type": "object",
        "properties": {"role": {"type": "string"}},
        "required": ["role", "content"],
    }


class ChatPayload(BaseModel):
    """An `ai.chat` payload: `messages` or `prompt`, and optional generation parameters."""

    model_config = ConfigDict(extra="allow", frozen=True, json_schema_extra=_chat_schema)

    messages: list[dict[str, Any]] | None = Field(None, min_length=1)
    prompt: str | None = None
    system: str | None = None
    model: str | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)

    def chat_messages(self) -> list[dict[str, Any]]:
        """What to send: `system` first, then `messages` or the `prompt` as one user turn."""
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of `messages` or `prompt`")
        turns = self.messages or [{"role": "user", "content": self.prompt}]
        for i, turn in enumerate(turns):
            if not isinstance(turn.get("role"), str) or "content" not in turn:
                raise ValueError(f"messages[{i}] needs a string `role` and a `content`")
        return ([{"role": "system", "content": self.system}] if self.system else []) + turns

    def params(self) -> dict[str, Any]:
        """Generation parameters to send, refusing any that are not on the allowlist."""
        extra = dict(self.model_extra or {})
        unknown = sorted(set(extra) - set(PASS_THROUGH))
        if unknown:
            raise ValueError(
                f"unsupported payload keys {unknown}; allowed besides messages, prompt, system, "
                f"model, temperature, max_tokens: {', '.join(PASS_THROUGH)}"
            )
        given = {"temperature": self.temperature, "max_tokens": self.max_tokens, **extra}
        return {k: v for k, v in given.items() if v is not None}


@dataclass(frozen=True)
class _Runtime:
    settings: AISettings
    client: openai.AsyncOpenAI
    slots: asyncio.Semaphore
    scrub: Scrubber
    where: str  # the server, as error messages name it


@functools.cache
def _runtime() -> _Runtime:
    """This process's settings and client, built by the first task (on the worker's loop)."""
    import openai  # here, not at the top: a third of a second every worker process would pay

    try:
        settings = AISettings()
    except ValidationError as exc:
        raise NonRetryableError(f"invalid TASKCAST_AI_* settings: {exc}") from None
    if settings.api_key is None and settings.base_url is None:
        raise NonRetryableError(
            "ai.chat is not configured on this worker: set TASKCAST_AI_API_KEY (OpenAI) or "
            "TASKCAST_AI_BASE_URL (any OpenAI-compatible server, e.g. vLLM, llama.cpp, Ollama)"
        )
    key = settings.api_key.get_secret_value() if settings.api_key else "no-key"
    client = openai.AsyncOpenAI(
        api_key=key,  # local servers want none, but the SDK insists on one
        base_url=settings.base_url or "https://api.openai.com/v1",
        timeout=settings.request_timeout,
        max_retries=0,
    )
    slots = asyncio.Semaphore(settings.max_concurrency)
    return _Runtime(settings, client, slots, Scrubber([key]), _display(settings.base_url))


def _display(base_url: str | None) -> str:
    """The server as errors name it: its URL without any credentials in it."""
    if base_url is None:
        return "the OpenAI API"
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


@functools.cache
def _tokens() -> Tokens | None:
    """The token budget of `TASKCAST_AI_TOKENS`, keyed by model (a payload without one counts
    under `TASKCAST_AI_MODEL`); None when unset, or when the settings are invalid (the first task
    fails, naming them)."""
    try:
        settings = AISettings()
    except ValidationError:
        return None
    if not settings.tokens:
        return None
    try:
        return Tokens(settings.tokens, settings.tokens_key, settings.tokens_reserve, settings.model)
    except ValueError as exc:
        log.error("TASKCAST_AI_TOKENS* ignored: %s", exc)
        return None


@task("ai.chat", queue="ai", max_attempts=4, payload=ChatPayload, tokens=_tokens)
async def chat(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Stream a chat completion into output events; return text, finish reason, model, usage."""
    import openai

    rt = _runtime()
    try:
        request = ChatPayload.model_validate(payload)
        messages, params = request.chat_messages(), request.params()
    except (ValidationError, ValueError) as exc:
        raise NonRetryableError(f"invalid ai.chat payload: {exc}") from None
    model = request.model or rt.settings.model

    async def write(text: str) -> None:
        ctx.output(text)  # queued for the batched writer: it never blocks the loop

    async with rt.slots:
        try:
            async with OutputCoalescer(write, rt.settings.flush_ms / 1000) as out:
                result = await _stream(rt, model, messages, params, out)
        except (openai.OpenAIError, json.JSONDecodeError) as exc:
            raise _translate(exc, rt, model) from None  # the cause may quote the key
    if result["usage"] and isinstance(result["usage"].get("total_tokens"), int):
        ctx.used_tokens(result["usage"]["total_tokens"])
    log.info(
        "ai.chat %s attempt %d: %s, %d output writes",
        ctx.task_id,
        ctx.attempt,
        result["finish_reason"],
        out.writes,
    )
    return result


async def _stream(
    rt: _Runtime,
    model: str,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    out: OutputCoalescer,
) -> dict[str, Any]:
    parts: list[str] = []
    finish: str | None = None
    usage: dict[str, Any] | None = None
    stream = await rt.client.chat.completions.create(
        model=model,
        messages=cast("list[ChatCompletionMessageParam]", messages),  # checked, in wire format
        stream=True,
        stream_options={"include_usage": True},
        extra_body=params or None,  # allowlisted and JSON already: sent as given
    )
    async with stream:  # closing it on cancel or error drops the upstream HTTP request
        async for chunk in stream:
            model = chunk.model or model
            if chunk.usage is not None:
                usage = chunk.usage.model_dump(exclude_none=True)
            for choice in chunk.choices[:1]:
                if choice.delta.content:
                    parts.append(choice.delta.content)
                    await out.add(choice.delta.content)
                finish = choice.finish_reason or finish
    if finish is None:
        raise UpstreamUnavailableError(
            "the model server's stream ended before the completion finished (no finish_reason)",
            0,
        )
    return {"text": "".join(parts), "finish_reason": finish, "model": model, "usage": usage}


def _translate(exc: Exception, rt: _Runtime, model: str) -> Exception:
    """The task error for a failed call, with the API key scrubbed from every word of it."""
    import openai

    where = rt.where
    if isinstance(exc, json.JSONDecodeError):
        return UpstreamUnavailableError(f"malformed chunk in the stream from {where}: {exc}", 0)
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamUnavailableError(f"{where} timed out ({exc.message})", 0)
    if isinstance(exc, openai.APIConnectionError):
        cause = shorten(rt.scrub(str(exc.__cause__ or exc.message)), 200)
        return UpstreamUnavailableError(f"lost the connection to {where}: {cause}", 0)
    if isinstance(exc, openai.APIStatusError):
        return _status_error(exc, rt, model)
    return UpstreamUnavailableError(
        f"{type(exc).__name__} from {where}: {shorten(rt.scrub(str(exc)))}", 0
    )


def _status_error(exc: openai.APIStatusError, rt: _Runtime, model: str) -> Exception:
    status, where = exc.status_code, rt.where
    body = exc.body
    said = body.get("message") if isinstance(body, dict) else None
    detail = shorten(rt.scrub(str(said or exc.message)))
    if status in RETRYABLE_STATUS or status >= 500:
        delay = retry_after(exc.response.headers)
        wait = f"; retry after {delay:g}s as asked" if delay is not None else ""
        return UpstreamUnavailableError(f"HTTP {status} from {where}{wait}: {detail}", delay or 0)
    cause = CAUSES.get(status, "the request was refused")
    if status == 404:
        cause = f"the model {model!r} or the chat completions endpoint does not exist"
    return UpstreamRejectedError(f"HTTP {status} from {where}: {cause} ({detail})")
