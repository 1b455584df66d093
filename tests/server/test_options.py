"""The server's gRPC keep-alive values come from its named constants, set together."""

from __future__ import annotations

from taskcast.server import app
from taskcast.server.config import ServerSettings


def test_keep_alive_options_are_the_named_constants() -> None:
    options = dict(app.server_options(ServerSettings()))
    assert options["grpc.keepalive_time_ms"] == app.KEEPALIVE_TIME_MS
    assert options["grpc.keepalive_timeout_ms"] == app.KEEPALIVE_TIMEOUT_MS
    floor = options["grpc.http2.min_ping_interval_without_data_ms"]
    assert floor == app.MIN_CLIENT_PING_INTERVAL_MS
    # Pings this server sends itself are within what it permits its peers.
    assert floor <= app.KEEPALIVE_TIME_MS
