"""The HTTP gateway for web apps and browsers: tasks as JSON, events as Server-Sent Events.

Served by `taskcast server` on `http_port` (0: off), on the same event loop as the gRPC server,
over the same modules (no gRPC call in between):

    GET  /v1/tasks/{id}          the task (server/jsonview.py: `Task.to_dict()`'s shape)
    GET  /v1/tasks/{id}/events   text/event-stream: `id: <sequence>` + `data: <Event.to_dict()>`
                                 per event, `: keep-alive` comments when idle, and after the
                                 terminal event `event: end` + `data: {}` (the page closes its
                                 EventSource there; without it a browser reconnects for ever)
    POST /v1/tasks/{id}:cancel   the task after the cancel; body optional: {"reason": "..."}

Refusals are JSON, `{"error": {"code": "NOT_FOUND", "message": "..."}}`, with the HTTP status of
the gRPC code (`HTTP_STATUS`), and come before a stream starts. The same tokens as gRPC apply
(server/auth.py), plus watch tokens in `?token=` or the Authorization header. An event stream is
a watch like a WatchTask: the same `max_watchers` budget, counted in GetStats and the metrics.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from typing import Any

import grpc
from aiohttp import web

from taskcast.core.records import EventRecord
from taskcast.server import jsonview, validation
from taskcast.server.auth import Access, check
from taskcast.server.errors import InvalidArgument, translate
from taskcast.server.store import ServerStore
from taskcast.server.watch import Item, KeepAlive, WatchSession

log = logging.getLogger("taskcast.server")

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
}
#: A cancel's body is at most a reason (1024 characters); anything much larger is refused (413).
MAX_BODY = 16 << 10
RETRY = b"retry: 1000\n\n"  # a browser reconnects 1 s after a dropped stream (its default is 3 s)
KEEP_ALIVE = b": keep-alive\n\n"
END = b"event: end\ndata: {}\n\n"
_CORS_HEADERS = "Authorization, Content-Type, Last-Event-ID"


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def frame(item: Item) -> bytes:
    """One watch item as an SSE frame (the keep-alive a comment, which EventSource ignores)."""
    if isinstance(item, EventRecord):
        return b"id: %d\ndata: %s\n\n" % (item.sequence, _json(jsonview.event(item)))
    if isinstance(item, KeepAlive):
        return KEEP_ALIVE
    return b"data: %s\n\n" % _json(jsonview.trimmed(item))  # no id: it is not a stored event


def error_response(exc: BaseException) -> web.Response:
    """The JSON answer for an error, with the HTTP status of its gRPC code."""
    err = translate(exc)
    body: dict[str, Any] = {"code": err.code.name, "message": str(err)}
    if isinstance(err, InvalidArgument):
        body["violations"] = [{"field": f, "description": d} for f, d in err.violations]
    headers = {}
    retry_after = getattr(err, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    status = HTTP_STATUS.get(err.code, 500)
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return web.json_response({"error": body}, status=status, headers=headers)


class Gateway:
    """The routes, over the server's own store, watch session and access rules."""

    def __init__(
        self,
        store: ServerStore,
        watches: WatchSession,
        access: Access,
        cors_origins: tuple[str, ...] = (),
    ) -> None:
        self.store, self.watches, self.access = store, watches, access
        self.cors_origins = frozenset(cors_origins)

    def app(self) -> web.Application:
        """The aiohttp application (default header and URL bounds: 8190 bytes a line)."""
        app = web.Application(middlewares=[self._errors], client_max_size=MAX_BODY)
        for path, method, handler in (
            ("/v1/tasks/{id}/events", "GET", self.events),
            ("/v1/tasks/{id}:cancel", "POST", self.cancel),
            ("/v1/tasks/{id}", "GET", self.get),
        ):
            resource = app.router.add_resource(path)
            resource.add_route(method, handler)
            resource.add_route("OPTIONS", self.preflight)
        app.on_response_prepare.append(self._cors)
        return app

    async def _allowed(self, request: web.Request, rpc: str) -> tuple[str, str]:
        """The request's task id and its caller's tenant, once the caller may make `rpc` on it."""
        task_id = request.match_info["id"]
        p = validation.Problems()
        validation.task_id(task_id, p)
        p.check()
        caller = await self.access.identify(
            request.headers.get("Authorization", ""), request.query.get("token", "")
        )
        check(caller, rpc, task_id)
        return task_id, caller.tenant

    async def get(self, request: web.Request) -> web.Response:
        """GET /v1/tasks/{id}."""
        task_id, tenant = await self._allowed(request, "GetTask")
        return web.json_response(jsonview.task(await self.store.get(task_id, tenant)))

    async def cancel(self, request: web.Request) -> web.Response:
        """POST /v1/tasks/{id}:cancel, with an optional `{"reason": "..."}`."""
        task_id, tenant = await self._allowed(request, "CancelTask")
        reason = await _reason(request)
        record = await self.store.cancel(task_id, reason or "cancelled by request", tenant)
        return web.json_response(jsonview.task(record))

    async def events(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/tasks/{id}/events: the task's events after the cursor, as SSE."""
        task_id, tenant = await self._allowed(request, "WatchTask")
        after = _cursor(request)
        response = web.StreamResponse(headers={"Cache-Control": "no-cache"})
        response.content_type = "text/event-stream"

        async def started() -> None:  # admitted, task and cursor checked: the stream begins
            await response.prepare(request)
            await response.write(RETRY)

        try:
            stream = self.watches.stream(task_id, after, tenant, started)
            async with contextlib.aclosing(stream) as items:
                async for item in items:
                    await response.write(frame(item))
            await response.write(END)
        except Exception as exc:
            if not response.prepared:
                raise
            # Mid-stream (shutdown, a watcher that fell behind, Redis gone, the client gone):
            # close without the end event, and the browser resumes with Last-Event-ID.
            why = exc if isinstance(exc, OSError) else translate(exc)  # OSError: client gone
            log.debug("event stream of %s cut: %s", task_id, why)
        return response

    async def preflight(self, request: web.Request) -> web.Response:
        """OPTIONS: what a cross-origin page may send (its origin must be allowed)."""
        response = web.Response(status=204)
        if request.headers.get("Origin", "") in self.cors_origins or "*" in self.cors_origins:
            response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = _CORS_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
        return response

    async def _cors(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin", "")
        if origin and (origin in self.cors_origins or "*" in self.cors_origins):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every refusal as JSON: domain errors by their code, aiohttp's own (an unknown
        route, a method not allowed, a body too large) by their status."""
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            body = {"code": exc.reason.upper().replace(" ", "_"), "message": exc.text or ""}
            return web.json_response({"error": body}, status=exc.status)
        except Exception as exc:
            return error_response(exc)


def _cursor(request: web.Request) -> int:
    """The sequence to resume after: `Last-Event-ID` (a browser reconnecting), else `?after=`."""
    text = request.headers.get("Last-Event-ID") or request.query.get("after") or "0"
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        field = "Last-Event-ID" if "Last-Event-ID" in request.headers else "after"
        raise InvalidArgument([(field, "must be a sequence number (0 or more)")])
    return int(text)


async def start(gateway: Gateway, host: str, port: int, grace: float) -> tuple[web.AppRunner, int]:
    """Serve `gateway` on host:port on the running loop; returns the runner and the port.

    `runner.cleanup()` stops listening, gives requests still running `grace` seconds, then
    cancels them (event streams have ended by then: the fan-out stopped first).
    """
    # handler_cancellation: a client that goes (a tab closed) cancels its handler at once, so
    # its watcher slot is free at once, not at the next keep-alive write that fails.
    runner = web.AppRunner(
        gateway.app(), handler_cancellation=True, access_log=None, shutdown_timeout=grace
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner, int(runner.addresses[0][1])


async def _reason(request: web.Request) -> str:
    """The optional cancel reason from the JSON body."""
    if not request.can_read_body:
        return ""
    try:
        body = await request.json()
    except ValueError:
        body = None  # refused below, as anything but an object is
    if not isinstance(body, dict) or not isinstance(body.get("reason", ""), str):
        raise InvalidArgument([("body", 'must be a JSON object such as {"reason": "..."}')])
    reason: str = body.get("reason", "")
    p = validation.Problems()
    validation.reason(reason, p)
    p.check()
    return reason
