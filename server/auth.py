"""Optional bearer-token authentication: full-access tokens and read-only tokens.

With no tokens configured every call is allowed (a trusted network). Otherwise each call must send
`authorization: Bearer <token>`: a missing or unknown token is UNAUTHENTICATED, and a read-only
token on anything but a read (SubmitTask, SubmitTasks, CancelTask, RetryTask) is PERMISSION_DENIED.
Health and reflection stay open, for load balancers and tools.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

READ_ONLY = frozenset({"GetTask", "ListTasks", "GetStats", "ListKinds", "WatchTask", "WatchTasks"})
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def parse_tokens(text: str) -> tuple[str, ...]:
    """Comma-separated tokens; blanks dropped."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _known(token: str, tokens: tuple[str, ...]) -> bool:
    # compare against every token, in constant time each, so timing tells nothing
    return any([hmac.compare_digest(token.encode(), t.encode()) for t in tokens])


class TokenAuth(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc has no stubs
    """Checks the bearer token of every TaskService call."""

    def __init__(self, full: tuple[str, ...], read: tuple[str, ...]) -> None:
        self.full, self.read = full, read

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        """Pass the call on, or answer it with a handler of the same shape that aborts."""
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        problem = self._check(method.rsplit("/", 1)[-1], dict(details.invocation_metadata or ()))
        return handler if problem is None else _rejecting(handler, *problem)

    def _check(self, rpc: str, metadata: dict[str, Any]) -> tuple[grpc.StatusCode, str] | None:
        scheme, _, token = str(metadata.get("authorization", "")).partition(" ")
        if scheme.lower() != "bearer" or not token:
            return grpc.StatusCode.UNAUTHENTICATED, (
                "this server needs a token: send metadata 'authorization: Bearer <token>' "
                "(TASKCAST_TOKEN for the client and the command)"
            )
        if _known(token, self.full):
            return None
        if _known(token, self.read):
            if rpc in READ_ONLY:
                return None
            return grpc.StatusCode.PERMISSION_DENIED, (
                f"this token may only read ({', '.join(sorted(READ_ONLY))}), not call {rpc}"
            )
        return grpc.StatusCode.UNAUTHENTICATED, "unknown token"


def _rejecting(handler: Any, code: grpc.StatusCode, message: str) -> Any:
    async def unary(request: Any, context: Any) -> Any:
        await context.abort(code, message)

    async def stream(request: Any, context: Any) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator, as the streaming handler is

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            stream, handler.request_deserializer, handler.response_serializer
        )
    return grpc.unary_unary_rpc_method_handler(
        unary, handler.request_deserializer, handler.response_serializer
    )
