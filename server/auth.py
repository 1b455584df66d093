"""Optional bearer-token authentication: each token is one tenant's, with full or read access.

With no tokens configured every call is the default tenant's, with full access (a trusted
network). Otherwise each call must send `authorization: Bearer <token>`: a missing or unknown
token is UNAUTHENTICATED, and a read-only token on any RPC outside `READ_ONLY` (SubmitTask,
SubmitTasks, CancelTask, RetryTask, RedriveTasks) is PERMISSION_DENIED. Health and reflection
stay open, for load balancers and tools.

`authorize` is the one decision (token -> `Caller`); `TokenAuth` makes it for every TaskService
call and hands the caller to the handler, which reads it with `caller()`.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterable
from contextvars import ContextVar
from typing import Any

import grpc

from taskcast.server.interceptors import WrappingInterceptor
from taskcast.server.tenants import OPEN, Caller, Tokens

__all__ = ["READ_ONLY", "TokenAuth", "act_as", "authorize", "caller"]

READ_ONLY = frozenset({"GetTask", "ListTasks", "GetStats", "ListKinds", "WatchTask", "WatchTasks"})
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
Problem = tuple[grpc.StatusCode, str]

# Each RPC runs in its own asyncio task (a copy of the server's context), so a value set by the
# handler's wrapper is that call's alone. Unset: a server without tokens (`OPEN`).
_CALLER: ContextVar[Caller] = ContextVar("taskcast_caller", default=OPEN)


def caller() -> Caller:
    """Whom the RPC being handled is for (its tenant, and whether it may write)."""
    return _CALLER.get()


def act_as(found: Caller) -> None:
    """Make `found` the caller of the RPC being handled (its asyncio task), after `authorize`."""
    _CALLER.set(found)


def authorize(tokens: Tokens, rpc: str, metadata: Iterable[tuple[str, Any]]) -> Caller | Problem:
    """The caller of `rpc` given its call's metadata, or the status and message to refuse it."""
    scheme, _, token = str(dict(metadata).get("authorization", "")).partition(" ")
    if scheme.lower() != "bearer" or not token:
        return grpc.StatusCode.UNAUTHENTICATED, (
            "this server needs a token: send metadata 'authorization: Bearer <token>' "
            "(TASKCAST_TOKEN for the client and the command)"
        )
    found = tokens.resolve(token)
    if found is None:
        return grpc.StatusCode.UNAUTHENTICATED, "unknown token"
    if not found.can_write and rpc not in READ_ONLY:
        return grpc.StatusCode.PERMISSION_DENIED, (
            f"this token may only read ({', '.join(sorted(READ_ONLY))}), not call {rpc}"
        )
    return found


class TokenAuth(WrappingInterceptor):
    """Checks the bearer token of every TaskService call and sets its `caller()`."""

    def __init__(self, tokens: Tokens) -> None:
        super().__init__()
        self.tokens = tokens

    def wrap(self, handler: Any, method: str) -> Any:
        """The handler behind the token check (health and reflection pass unchecked)."""
        if method.startswith(OPEN_SERVICES):
            return handler
        rpc, tokens = method.rsplit("/", 1)[-1], self.tokens

        async def admit(context: Any) -> None:
            found = authorize(tokens, rpc, context.invocation_metadata() or ())
            if isinstance(found, Caller):
                act_as(found)
            else:
                await context.abort(*found)

        parse, reply = handler.request_deserializer, handler.response_serializer
        if inspect.iscoroutinefunction(handler.unary_unary):
            behavior = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                await admit(context)
                return await behavior(request, context)

            return grpc.unary_unary_rpc_method_handler(unary, parse, reply)
        if inspect.isasyncgenfunction(handler.unary_stream):
            produce = handler.unary_stream

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                await admit(context)
                async for item in produce(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(stream, parse, reply)
        raise TypeError(f"{method}: only async unary requests can be checked")  # none other here
