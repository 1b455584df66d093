"""Optional bearer-token authentication: each token is one tenant's, with full or read access;
per-task watch tokens for browsers.

With no tokens configured every call is the default tenant's, with full access (a trusted
network). Otherwise each call must send `authorization: Bearer <token>`: a missing or unknown
token is UNAUTHENTICATED, and a read-only token on any RPC outside `READ_ONLY` (SubmitTask,
SubmitTasks, CancelTask, RetryTask, RedriveTasks, CreateWatchToken) is PERMISSION_DENIED. Health
and reflection stay open, for load balancers and tools.

gRPC (`TokenAuth`) and the HTTP gateway share the two decisions: `Access.identify` says who is
calling (one `Caller`: a tenant, whether it may write, and for a watch token its one task),
`check` whether that caller may make a call. A watch token (server/watchtokens.py) is accepted
by the gateway alone, for its one task. `TokenAuth` hands the caller to the handler, which
reads it with `caller()`.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from taskcast.core.layout import DEFAULT_TENANT
from taskcast.server.errors import PermissionDenied, ServiceError, Unauthenticated
from taskcast.server.interceptors import WrappingInterceptor
from taskcast.server.tenants import OPEN, Caller, Tokens

__all__ = ["READ_ONLY", "Access", "Grant", "TokenAuth", "act_as", "caller", "check"]

READ_ONLY = frozenset({"GetTask", "ListTasks", "GetStats", "ListKinds", "WatchTask", "WatchTasks"})
#: What a watch token may call, on its own task only (CancelTask when it allows cancelling).
FOR_ONE_TASK = frozenset({"GetTask", "WatchTask", "CancelTask"})
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")

# Each RPC runs in its own asyncio task (a copy of the server's context), so a value set by the
# handler's wrapper is that call's alone. Unset: a server without tokens (`OPEN`).
_CALLER: ContextVar[Caller] = ContextVar("taskcast_caller", default=OPEN)


def caller() -> Caller:
    """Whom the RPC being handled is for (its tenant, and whether it may write)."""
    return _CALLER.get()


def act_as(found: Caller) -> None:
    """Make `found` the caller of the RPC being handled (its asyncio task), after `identify`."""
    _CALLER.set(found)


def check(who: Caller, rpc: str, task_id: str = "") -> None:
    """Allow `who` the call `rpc` (on `task_id`), or raise PermissionDenied saying why not."""
    if who.task_id:  # a watch token: its one task, and only what it grants
        if rpc not in FOR_ONE_TASK or task_id != who.task_id:
            raise PermissionDenied(
                f"this watch token opens task {who.task_id} only (get, events"
                f"{', cancel' if who.cancel else ''})"
            )
        if rpc == "CancelTask" and not who.cancel:
            raise PermissionDenied(
                "this watch token may not cancel; create one with allow_cancel "
                "(client.watch_token(task_id, cancel=True))"
            )
        return
    if not who.can_write and rpc not in READ_ONLY:
        raise PermissionDenied(
            f"this token may only read ({', '.join(sorted(READ_ONLY))}), not call {rpc}"
        )


@dataclass(frozen=True)
class Grant:
    """What a valid watch token allows: one task of one tenant, until `expires_ms`, cancelling
    or not."""

    task_id: str
    expires_ms: int
    cancel: bool
    tenant: str = DEFAULT_TENANT


class GrantReader(Protocol):
    """Reads a watch token (server/watchtokens.py); raises Unauthenticated for a bad one."""

    def looks_like(self, token: str) -> bool:
        """Whether `token` has a watch token's shape (so it is not a configured token)."""
        ...

    async def verify(self, token: str) -> Grant:
        """The grant of a valid token."""
        ...


class Access:
    """The configured tokens, and the one decision of who is calling."""

    def __init__(self, tokens: Tokens, grants: GrantReader | None = None) -> None:
        self.tokens, self.grants = tokens, grants

    @property
    def enabled(self) -> bool:
        """Whether calls need a token at all."""
        return bool(self.tokens)

    async def identify(self, authorization: str, query_token: str = "") -> Caller:
        """The caller of a request with this `authorization` header (and, from the gateway, a
        `?token=` parameter, which may carry a watch token only: never a tenant's token in a
        URL). Watch tokens are read only when `grants` is set (the gateway's Access).

        Raises:
            Unauthenticated: no token, an unknown one, or a watch token expired or altered.
        """
        if not self.enabled:
            return OPEN
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            token = ""
        found = self.tokens.resolve(token) if token else None
        if found is not None:
            return found
        watch = token or query_token
        if self.grants is not None and watch and self.grants.looks_like(watch):
            grant = await self.grants.verify(watch)
            return Caller(grant.tenant, False, grant.task_id, grant.cancel)
        if not watch:
            raise Unauthenticated(
                "this server needs a token: send metadata 'authorization: Bearer <token>' "
                "(TASKCAST_TOKEN for the client and the command)"
            )
        raise Unauthenticated("unknown token")


class TokenAuth(WrappingInterceptor):
    """Checks the bearer token of every TaskService call (watch tokens are not accepted) and
    sets its `caller()`."""

    def __init__(self, access: Access) -> None:
        super().__init__()
        self.access = access

    def wrap(self, handler: Any, method: str) -> Any:
        """The handler behind the token check (health and reflection pass unchecked)."""
        if method.startswith(OPEN_SERVICES):
            return handler
        rpc, access = method.rsplit("/", 1)[-1], self.access

        async def admit(context: Any) -> None:
            metadata = dict(context.invocation_metadata() or ())
            try:
                found = await access.identify(str(metadata.get("authorization", "")))
                check(found, rpc)
            except ServiceError as exc:
                await context.abort(exc.code, str(exc))
            act_as(found)

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
