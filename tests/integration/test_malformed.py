"""A body that is not valid protobuf is INVALID_ARGUMENT, after the token check, logged briefly."""

from __future__ import annotations

import logging
import time

import grpc
import pytest

from taskcast.cli.redis_proc import RedisProcess
from taskcast.server.config import ServerSettings
from taskcast.server.decoding import REPORT_EVERY

TOKEN = "s3cret-malformed"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
SUBMIT, WATCH = "/taskcast.v1.TaskService/SubmitTask", "/taskcast.v1.TaskService/WatchTask"
BODIES = {
    "corrupt": b"\xff\xff\xff\xff",
    "invalid utf-8 in kind": b"\x0a\x02\xff\xfe",  # field 1 (string), 2 bytes, not UTF-8
    "truncated": b"\x0a\x05ab",  # field 1 announces 5 bytes, 2 follow
}


@pytest.fixture(scope="module")
def server_settings(redis_server: RedisProcess, prefix: str) -> ServerSettings:
    """This module's server requires a token, so the order of the checks shows."""
    return ServerSettings(
        redis_url=redis_server.url, redis_prefix=prefix, listen="127.0.0.1:0", auth_tokens=TOKEN
    )


def call(channel: grpc.Channel, path: str, body: bytes, **kw: object) -> grpc.RpcError:
    """Send raw bytes as the request body (no serializer) and return the error."""

    def send() -> None:
        if path == WATCH:
            list(channel.unary_stream(path)(body, timeout=10, **kw))
        else:
            channel.unary_unary(path)(body, timeout=10, **kw)

    with pytest.raises(grpc.RpcError) as info:
        send()
    return info.value


@pytest.mark.parametrize("body", BODIES.values(), ids=BODIES.keys())
@pytest.mark.parametrize("path", [SUBMIT, WATCH])
def test_malformed_body_is_invalid_argument(
    grpc_channel: grpc.Channel, path: str, body: bytes
) -> None:
    err = call(grpc_channel, path, body, metadata=AUTH)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert "request body is not a valid taskcast.v1." in err.details()
    assert len(err.details()) < 300


def test_health_answers_a_malformed_body_with_invalid_argument(grpc_channel: grpc.Channel) -> None:
    err = call(grpc_channel, "/grpc.health.v1.Health/Check", b"\x0a\x05ab")  # open: no token
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "grpc.health.v1.HealthCheckRequest" in err.details()


def test_reflection_answers_a_malformed_message_with_invalid_argument(
    grpc_channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    with pytest.raises(grpc.RpcError) as info:  # open, and a stream of requests
        list(grpc_channel.stream_stream(path)(iter([b"\x0a\x05ab"]), timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_the_token_is_checked_first_and_refusals_log_nothing(
    grpc_channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for body in BODIES.values():
        assert call(grpc_channel, SUBMIT, body).code() == grpc.StatusCode.UNAUTHENTICATED
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_flood_of_malformed_requests_logs_a_few_lines_without_traceback(
    grpc_channel: grpc.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    for _ in range(60):
        assert call(grpc_channel, SUBMIT, b"\xff", metadata=AUTH).code().name == "INVALID_ARGUMENT"
    elapsed = time.monotonic() - started
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in loud), loud
    assert all(r.getMessage().count("\n") == 0 for r in loud)
    # one line per REPORT_EVERY seconds at most, however long the loop took on this machine
    assert len(loud) <= 2 + int(elapsed / REPORT_EVERY)
