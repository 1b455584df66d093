"""Optional bearer-token authentication: full-access, read-only and per-task watch tokens.

With no tokens configured every call is allowed (a trusted network). Otherwise each call must send
`authorization: Bearer <token>`: a missing or unknown token is UNAUTHENTICATED, and a read-only
token on anything but a read (SubmitTask, SubmitTasks, CancelTask, RetryTask, CreateWatchToken)
is PERMISSION_DENIED. Health and reflection stay open, for load balancers and tools.

gRPC (`TokenAuth`) and the HTTP gateway share the two decisions: `Access.identify` says who is
calling (one small `Caller`), `Caller.check` whether that caller may make a call. A watch token
(server/watchtokens.py) is accepted by the gateway alone, for its one task.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import grpc

from taskcast.server.errors import PermissionDenied, ServiceError, Unauthenticated

READ_ONLY = frozenset({"GetTask", "ListTasks", "GetStats", "ListKinds", "WatchTask", "WatchTasks"})
#: What a watch token may call, on its own task only (CancelTask when it allows cancelling).
FOR_ONE_TASK = frozenset({"GetTask", "WatchTask", "CancelTask"})
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def parse_tokens(text: str) -> tuple[str, ...]:
    """Comma-separated tokens; blanks dropped."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _known(token: str, tokens: tuple[str, ...]) -> bool:
    # compare against every token, in constant time each, so timing tells nothing
    return any([hmac.compare_digest(token.encode(), t.encode()) for t in tokens])


@dataclass(frozen=True)
class Grant:
    """What a valid watch token allows: one task, until `expires_ms`, cancelling or not."""

    task_id: str
    expires_ms: int
    cancel: bool


class GrantReader(Protocol):
    """Reads a watch token (server/watchtokens.py); raises Unauthenticated for a bad one."""

    def looks_like(self, token: str) -> bool:
        """Whether `token` has a watch token's shape (so it is not a configured token)."""
        ...

    async def verify(self, token: str) -> Grant:
        """The grant of a valid token."""
        ...


@dataclass(frozen=True)
class Caller:
    """Who is calling, as far as access goes: `full`, `read`, or `task` (a watch token for
    `task_id`, with `cancel` when it may cancel it)."""

    access: Literal["full", "read", "task"]
    task_id: str = ""
    cancel: bool = False

    def check(self, rpc: str, task_id: str = "") -> None:
        """Allow the call `rpc` (on `task_id`), or raise PermissionDenied saying why not."""
        if self.access == "full":
            return
        if self.access == "read":
            if rpc in READ_ONLY:
                return
            raise PermissionDenied(
                f"this token may only read ({', '.join(sorted(READ_ONLY))}), not call {rpc}"
            )
        if rpc not in FOR_ONE_TASK or task_id != self.task_id:
            raise PermissionDenied(
                f"this watch token opens task {self.task_id} only (get, events"
                f"{', cancel' if self.cancel else ''})"
            )
        if rpc == "CancelTask" and not self.cancel:
            raise PermissionDenied(
                "this watch token may not cancel; create one with allow_cancel "
                "(client.watch_token(task_id, cancel=True))"
            )


ANYONE = Caller("full")  # a server without tokens trusts its network


class Access:
    """The configured tokens, and the one decision of who is calling."""

    def __init__(
        self, full: tuple[str, ...], read: tuple[str, ...], grants: GrantReader | None = None
    ) -> None:
        self.full, self.read, self.grants = full, read, grants

    @property
    def enabled(self) -> bool:
        """Whether calls need a token at all."""
        return bool(self.full or self.read)

    async def identify(self, authorization: str, query_token: str = "") -> Caller:
        """The caller of a request with this `authorization` header (and, from the gateway, a
        `?token=` parameter, which may carry a watch token only: never a full or read token in
        a URL). Watch tokens are read only when `grants` is set (the gateway's Access).

        Raises:
            Unauthenticated: no token, an unknown one, or a watch token expired or altered.
        """
        if not self.enabled:
            return ANYONE
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            token = ""
        if token and _known(token, self.full):
            return Caller("full")
        if token and _known(token, self.read):
            return Caller("read")
        watch = token or query_token
        if self.grants is not None and watch and self.grants.looks_like(watch):
            grant = await self.grants.verify(watch)
            return Caller("task", grant.task_id, grant.cancel)
        if not watch:
            raise Unauthenticated(
                "this server needs a token: send metadata 'authorization: Bearer <token>' "
                "(TASKCAST_TOKEN for the client and the command)"
            )
        raise Unauthenticated("unknown token")


class TokenAuth(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc has no stubs
    """Checks the bearer token of every TaskService call (watch tokens are not accepted)."""

    def __init__(self, access: Access) -> None:
        self.access = access

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        """Pass the call on, or answer it with a handler of the same shape that aborts."""
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        metadata = dict(details.invocation_metadata or ())
        try:
            caller = await self.access.identify(str(metadata.get("authorization", "")))
            caller.check(method.rsplit("/", 1)[-1])
        except ServiceError as exc:
            return _rejecting(handler, exc.code, str(exc))
        return handler


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
