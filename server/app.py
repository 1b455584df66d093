"""Building and running the gRPC server: `create_server` for tests, `serve` for the command."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from dataclasses import dataclass

import grpc
import redis
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from taskcast.core import redisurl
from taskcast.server import gateway, metrics
from taskcast.server.auth import Access, TokenAuth
from taskcast.server.config import ServerSettings
from taskcast.server.decoding import StrictDecoding
from taskcast.server.fanout import Fanout
from taskcast.server.healthcheck import BoundedHealth
from taskcast.server.servicer import TaskService
from taskcast.server.store import ServerStore, connect
from taskcast.server.tenants import TenantsError, parse_tokens
from taskcast.server.tls import credentials, describe
from taskcast.v1 import tasks_pb2, tasks_pb2_grpc

log = logging.getLogger("taskcast.server")
SERVICE_NAME = tasks_pb2.DESCRIPTOR.services_by_name["TaskService"].full_name

# HTTP/2 keep-alive (docs/operations.md, "Bounds"): an idle connection is pinged every 30 s and
# dropped when the ack takes 10 s more, so a dead peer is found within about 40 s. Clients may
# ping as often as every 10 s (the client library pings every 30 s); more often gets a GOAWAY
# `too_many_pings`, so a client's keep-alive time must not go below MIN_CLIENT_PING_INTERVAL_MS.
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
MIN_CLIENT_PING_INTERVAL_MS = 10_000


@dataclass
class Running:
    """A started server and what it owns."""

    server: grpc.aio.Server
    port: int
    service: TaskService
    health: health.aio.HealthServicer
    metrics: metrics.Endpoint | None = None  # /metrics, when settings.metrics_port is set
    http: web.AppRunner | None = None  # the HTTP gateway, when settings.http_port is set
    http_port: int = 0
    accesses: tuple[Access, ...] = ()  # gRPC's and the gateway's: what a reload replaces

    def reload_tenants(self, settings: ServerSettings) -> bool:
        """Read the tokens and the tenants file again (SIGHUP) and check each call against them
        from now on; returns whether they were replaced.

        A file start-up would refuse, or one that turns tokens on or off (the token check is
        installed, or not, at start-up), keeps the current tokens, with an error logged.
        """
        try:
            tokens = settings.tokens()
        except TenantsError as exc:
            log.error("tenants not reloaded (the current tokens stay): %s", exc)
            return False
        if self.accesses and bool(tokens) != self.accesses[0].enabled:
            log.error(
                "tenants not reloaded (the current tokens stay): the new configuration has %s "
                "tokens; turning tokens on or off needs a restart",
                "some" if tokens else "no",
            )
            return False
        for access in self.accesses:
            access.tokens = tokens
        log.info("tenants reloaded from %s", settings.tenants_file or "the environment")
        return True

    async def stop(self, grace: float) -> None:
        """Health NOT_SERVING, streams told to resume elsewhere, in-flight unary calls finish."""
        await self.health.enter_graceful_shutdown()
        await self.service.fanout.stop()  # event streams too end (the browsers resume)
        await self.server.stop(grace)
        if self.http is not None:
            await self.http.cleanup()
        if self.metrics is not None:  # after the calls: their last counts are still served
            await asyncio.to_thread(self.metrics.close)
        await self.service.store.client.aclose()


def server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    """The gRPC core limits; docs/operations.md ("Bounds") gives the reason for each."""
    return [
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        # The largest request is a SubmitTask at the payload limit; 64 KiB covers the rest.
        ("grpc.max_receive_message_length", settings.max_payload_bytes + (64 << 10)),
        # What the client library accepts (its max_receive_message_length): anything bigger
        # fails here, with RESOURCE_EXHAUSTED, not after it crossed the network.
        ("grpc.max_send_message_length", 64 << 20),
        # grpc-core's defaults (1,000 soft, 3,000 hard) turned ~23% of a burst of 3,000
        # WatchTask opens into CANCELLED; at 10,000 the same burst all got through.
        ("grpc.server.max_pending_requests", settings.max_pending_calls),
        ("grpc.server.max_pending_requests_hard_limit", settings.max_pending_calls),
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        ("grpc.max_connection_idle_ms", _ms(settings.connection_idle)),
        ("grpc.max_connection_age_ms", _ms(settings.connection_age)),
        ("grpc.max_connection_age_grace_ms", _ms(settings.connection_age_grace)),
    ]


def _ms(seconds: float) -> int:
    return max(int(seconds * 1000), 1)


async def create_server(settings: ServerSettings) -> Running:
    """Start a server on `settings.listen` (port 0 picks a free port); returns it running."""
    client = connect(settings.redis_url)
    store = ServerStore(
        client,
        settings.layout,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=_ms(settings.redis_wait_timeout),
    )
    fanout = Fanout(store, settings.watcher_buffer, settings.watch_interest)
    fanout.start()
    service = TaskService(store, fanout, settings)
    access = Access(settings.tokens())
    server = grpc.aio.server(
        # Metrics outermost (refused calls are counted too), then the token check, so a client
        # without one is never parsed further.
        interceptors=[
            metrics.RpcMetrics(),
            *([TokenAuth(access)] if access.enabled else []),
            StrictDecoding(),
        ],
        options=server_options(settings),
    )
    tasks_pb2_grpc.add_TaskServiceServicer_to_server(service, server)
    health_servicer = BoundedHealth(settings.max_health_watchers)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, reflection.SERVICE_NAME, health.SERVICE_NAME), server
    )
    creds = credentials(settings)
    if creds is None:
        port = server.add_insecure_port(settings.listen)
    else:
        port = server.add_secure_port(settings.listen, creds)
    if port == 0:
        raise OSError(f"cannot listen on {settings.listen}")
    endpoint = None
    if settings.metrics_port:  # before start: a port in use fails start-up with nothing running
        collector = metrics.QueueCollector(store, asyncio.get_running_loop())
        endpoint = metrics.serve(settings.metrics_host, settings.metrics_port, [collector])
    await server.start()
    http, http_port = None, 0
    accesses: tuple[Access, ...] = (access,)
    if settings.http_port:
        # The gateway's Access reads watch tokens too; gRPC's never does.
        with_grants = Access(access.tokens, service.tokens)
        http, http_port = await _start_gateway(settings, service, with_grants)
        accesses = (access, with_grants)
    try:  # watchers are correct either way (they resync when it connects); this is for the log
        await asyncio.wait_for(fanout.connected.wait(), timeout=5)
    except TimeoutError:
        log.warning(
            "redis at %s does not answer yet; serving UNAVAILABLE until it does",
            redisurl.redacted(settings.redis_url),
        )
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return Running(server, port, service, health_servicer, endpoint, http, http_port, accesses)


async def _start_gateway(
    settings: ServerSettings, service: TaskService, access: Access
) -> tuple[web.AppRunner, int]:
    """The HTTP gateway over the service's own store and watch session (one watcher budget);
    `access` reads watch tokens too."""
    try:  # read the watch-token key now; when Redis is not up yet, at the first token
        await service.tokens.key()
    except redis.RedisError as exc:
        log.warning("watch-token key not read yet (%s); reading it on first use", exc)
    routes = gateway.Gateway(
        service.store, service.watches, access, parse_tokens(settings.http_cors_origins)
    )
    return await gateway.start(routes, settings.http_host, settings.http_port, settings.grace)


async def serve(settings: ServerSettings) -> None:
    """Run until SIGINT or SIGTERM, then stop gracefully; SIGHUP reloads the tenants file."""
    running = await create_server(settings)
    # Thousands of watch streams are hundreds of thousands of long-lived objects; full
    # collections over them paused the loop for 0.3-0.5 s (fan-out p99 548 ms, 3.8 ms with
    # this). Freeze what start-up made and collect the old generations rarely.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    host = settings.listen.rpartition(":")[0]
    log.info(
        "taskcast server listening on %s:%d, %s (redis %s)",
        host,
        running.port,
        describe(settings),
        redisurl.redacted(settings.redis_url),
    )
    if running.http is not None:
        log.info("HTTP gateway on http://%s:%d/v1/tasks/", settings.http_host, running.http_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, running.reload_tenants, settings)
    await stop.wait()
    log.info("shutting down (grace %.1fs)", settings.grace)
    await running.stop(settings.grace)
