"""Request bodies that do not parse answer INVALID_ARGUMENT, after the token check, quietly.

grpc.aio parses a request with its handler's `request_deserializer` before any handler code runs.
A body that is not valid protobuf (corrupt bytes, invalid UTF-8 in a string field, truncated)
raised `DecodeError` there, which grpc answers `UNKNOWN: Unexpected <class 'DecodeError'>` with
an ERROR traceback per request, before the token check: any client could flood the log.

`StrictDecoding` is the innermost interceptor. It wraps each handler's deserializer to return a
`Malformed` marker instead of raising, and the handler to answer that marker with
INVALID_ARGUMENT. The token check wraps outside it and never reads the request, so a client
without a token still gets UNAUTHENTICATED, and writes nothing to the log.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from taskcast.server.errors import clip
from taskcast.server.interceptors import WrappingInterceptor

log = logging.getLogger("taskcast.server")
REPORT_EVERY = 10.0  # seconds: one log line per interval at most, however fast they come


class Malformed:
    """What a strict deserializer returns for a body that does not parse."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


class _Throttled:
    """One warning per `every` seconds; the rest are counted into the next line."""

    def __init__(self, every: float) -> None:
        self.every, self.next_at, self.quiet = every, 0.0, 0

    def report(self, method: str, message: str) -> None:
        now = time.monotonic()
        if now < self.next_at:
            self.quiet += 1
            return
        more = f" ({self.quiet} more since the last report)" if self.quiet else ""
        log.warning("refused a malformed request to %s: %s%s", method, message, more)
        self.next_at, self.quiet = now + self.every, 0


class StrictDecoding(WrappingInterceptor):
    """Answers an unparsable request body with INVALID_ARGUMENT and one throttled log line."""

    def __init__(self, report_every: float = REPORT_EVERY) -> None:
        super().__init__()
        self._log = _Throttled(report_every)

    def wrap(self, handler: Any, method: str) -> Any:
        """The handler with a strict deserializer."""
        if handler.request_deserializer is None:
            return handler

        async def check(request: Any, context: Any) -> None:
            if isinstance(request, Malformed):
                self._log.report(method, request.message)
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)

        async def checked(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async for request in requests:
                await check(request, context)
                yield request

        parse, reply = _strict(handler.request_deserializer), handler.response_serializer
        if inspect.iscoroutinefunction(handler.unary_unary):
            behavior = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                await check(request, context)
                return await behavior(request, context)

            return grpc.unary_unary_rpc_method_handler(unary, parse, reply)
        if inspect.isasyncgenfunction(handler.unary_stream):
            produce = handler.unary_stream

            # grpc.aio runs a plain function returning an async generator as a sync handler,
            # so this is a generator too: one extra frame per streamed message (~1 us).
            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                await check(request, context)
                async for item in produce(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(stream, parse, reply)
        if inspect.isasyncgenfunction(handler.stream_stream):  # reflection, which is open
            both = handler.stream_stream

            async def bidi(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
                async for item in both(checked(requests, context), context):
                    yield item

            return grpc.stream_stream_rpc_method_handler(bidi, parse, reply)
        return handler  # sync handlers, context.write streams, client streams: none here


def _strict(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    owner = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
    name = getattr(owner, "full_name", "the request message")

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return Malformed(f"request body is not a valid {name}: {clip(str(exc), 120)}")

    return deserialize
