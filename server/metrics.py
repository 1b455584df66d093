"""The server's Prometheus metrics and the HTTP endpoint that serves them (docs/operations.md).

The metric objects live here, unregistered: each endpoint builds a registry of its own with them
and with a `QueueCollector` over its store, so several servers in one process (the tests) never
clash over names. Counting costs about a microsecond per call, whether or not an endpoint serves.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from taskcast.core.layout import DEFAULT_TENANT
from taskcast.server.interceptors import WrappingInterceptor
from taskcast.server.stats import QueueFigures
from taskcast.server.store import ServerStore

log = logging.getLogger("taskcast.server")

# Each scrape reads Redis at most once per this many seconds, however many scrapers there are:
# a scrape costs one pipeline of a few commands per queue and kind (about 1 ms here).
STATS_TTL = 2.0
STATS_TIMEOUT = 2.0  # seconds a scrape waits for Redis before it serves the last figures

SUBMITTED = Counter(
    "taskcast_tasks_submitted",
    "Tasks created by SubmitTask and SubmitTasks (an idempotent repeat is not counted), by kind, "
    "queue and tenant.",
    ["kind", "queue", "tenant"],
    registry=None,
)
WATCH_OPEN = Gauge(
    "taskcast_watch_streams_open", "WatchTask streams open on this server.", registry=None
)
WATCH_RESUMED = Counter(
    "taskcast_watch_streams_resumed",
    "WatchTask streams opened with after_sequence > 0 (a watcher resuming).",
    registry=None,
)
WATCH_ENDED_EARLY = Counter(
    "taskcast_watch_streams_ended_early",
    "WatchTask streams that ended before the task's terminal event, by reason.",
    ["reason"],
    registry=None,
)
RPC_REQUESTS = Counter(
    "taskcast_rpc_requests",
    "gRPC calls handled, by method and status code (streams counted when they end).",
    ["method", "code"],
    registry=None,
)
RPC_DURATION = Histogram(
    "taskcast_rpc_duration_seconds",
    "Time from a call's start to its end (a stream's whole life), by method.",
    ["method"],
    registry=None,
)
_SHARED: tuple[Collector, ...] = (
    SUBMITTED,
    WATCH_OPEN,
    WATCH_RESUMED,
    WATCH_ENDED_EARLY,
    RPC_REQUESTS,
    RPC_DURATION,
)


_QUEUE_FAMILIES = (
    ("taskcast_queue_depth", "Messages waiting to be picked up.", "depth"),
    ("taskcast_queue_delayed", "Messages waiting for their time (delay or backoff).", "delayed"),
    ("taskcast_queue_running", "Tasks running now.", "running"),
)


class QueueCollector(Collector):
    """Queue depth, delayed and running per queue, read from Redis at scrape time, cached.

    Scrapes run on the HTTP server's thread; the figures are read on the server's event loop
    (its Redis client belongs to that loop), with `STATS_TIMEOUT` to answer.
    """

    def __init__(
        self, store: ServerStore, loop: asyncio.AbstractEventLoop, ttl: float = STATS_TTL
    ) -> None:
        self._store, self._loop, self._ttl = store, loop, ttl
        self._lock = threading.Lock()
        self._figures: list[QueueFigures] = []
        self._read_at = float("-inf")

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families without samples: registering must not read Redis (it runs on the loop)."""
        return self._families([])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The three gauges, one sample per queue."""
        return self._families(self._current())

    @staticmethod
    def _families(figures: list[QueueFigures]) -> Iterator[GaugeMetricFamily]:
        for name, doc, attr in _QUEUE_FAMILIES:
            family = GaugeMetricFamily(name, doc, labels=["queue"])
            for q in figures:
                family.add_metric([q.name], getattr(q, attr))
            yield family

    def _current(self) -> list[QueueFigures]:
        with self._lock:  # concurrent scrapes share one read
            if time.monotonic() - self._read_at >= self._ttl:
                # queue figures are shared by all tenants: any tenant's read has them
                stats = self._store.stats(DEFAULT_TENANT)
                future = asyncio.run_coroutine_threadsafe(stats, self._loop)
                try:
                    self._figures = future.result(STATS_TIMEOUT)[0]
                except Exception as exc:  # Redis down or slow: the last figures, and a log line
                    future.cancel()
                    log.warning("metrics: reading queue figures failed: %s", exc)
                self._read_at = time.monotonic()
            return self._figures


class RpcMetrics(WrappingInterceptor):
    """Counts every call by method and code and times it; the outermost interceptor.

    Unknown methods pass through uncounted.
    """

    def wrap(self, handler: Any, method: str) -> Any:
        """The handler, timed and counted."""
        return _timed(handler, method.lstrip("/"))


def _timed(handler: Any, method: str) -> Any:
    requests, duration = RPC_REQUESTS, RPC_DURATION.labels(method)
    parse, reply = handler.request_deserializer, handler.response_serializer

    def record(context: Any, started: float, exc: BaseException | None) -> None:
        duration.observe(time.perf_counter() - started)
        requests.labels(method, _code(context, exc)).inc()

    if inspect.iscoroutinefunction(handler.unary_unary):
        behavior = handler.unary_unary

        async def unary(request: Any, context: Any) -> Any:
            started, error = time.perf_counter(), None
            try:
                return await behavior(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                record(context, started, error)

        return grpc.unary_unary_rpc_method_handler(unary, parse, reply)
    for kind in ("unary_stream", "stream_stream"):
        produce = getattr(handler, kind)
        if inspect.isasyncgenfunction(produce):
            return _timed_stream(kind, produce, parse, reply, record)
    return handler  # sync handlers and client streams: none here


def _timed_stream(
    kind: str,
    produce: Callable[[Any, Any], AsyncIterator[Any]],
    parse: Any,
    reply: Any,
    record: Callable[[Any, float, BaseException | None], None],
) -> Any:
    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        started, error = time.perf_counter(), None
        try:
            async for item in produce(request, context):
                yield item
        except BaseException as exc:
            error = exc
            raise
        finally:
            record(context, started, error)

    make = getattr(grpc, f"{kind}_rpc_method_handler")
    return make(stream, parse, reply)


_NAMES: dict[int, str] = {c.value[0]: str(c.name) for c in grpc.StatusCode}


def _code(context: Any, exc: BaseException | None) -> str:
    """The status the call ended with: what an abort set, else from how the handler ended."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int) and code:  # grpc.aio keeps an aborted call's code as its number
        return _NAMES.get(code, "UNKNOWN")
    if exc is None:
        return "OK"
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        return "CANCELLED"
    return "UNKNOWN"


class Endpoint:
    """The HTTP server of `/metrics`, on a daemon thread."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread) -> None:
        self.httpd, self.thread = httpd, thread

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.httpd.server_port)

    def close(self) -> None:
        """Stop serving and release the port."""
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def serve(host: str, port: int, collectors: Iterable[Collector]) -> Endpoint:
    """Serve the shared metrics and `collectors` on http://host:port/metrics."""
    registry = CollectorRegistry(auto_describe=True)
    for collector in (*_SHARED, *collectors):
        registry.register(collector)
    httpd, thread = start_http_server(port, host, registry)
    log.info("metrics on http://%s:%d/metrics", host, httpd.server_port)
    return Endpoint(httpd, thread)
