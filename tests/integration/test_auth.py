"""Bearer tokens: UNAUTHENTICATED without one, PERMISSION_DENIED for a reader that writes."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import NotFoundError, PermissionDeniedError, TaskClient, UnauthenticatedError
from taskcast.server.config import ServerSettings

pytestmark = pytest.mark.usefixtures("worker")
FULL, READ = "s3cret-full", "s3cret-read"


@pytest.fixture(scope="module")
def server_settings(redis_server: RedisProcess, prefix: str) -> ServerSettings:
    """This module's server requires tokens."""
    return ServerSettings(
        redis_url=redis_server.url,
        redis_prefix=prefix,
        listen="127.0.0.1:0",
        auth_tokens=f"other, {FULL}",
        read_tokens=READ,
    )


@pytest.mark.parametrize("token", [None, "wrong"])
def test_missing_or_unknown_token_is_unauthenticated(grpc_addr: str, token: str | None) -> None:
    with TaskClient(grpc_addr, token=token) as client:
        with pytest.raises(UnauthenticatedError, match="token"):
            client.submit("test.echo", {})
        with pytest.raises(UnauthenticatedError):
            list(client.watch("0" * 32))


def test_full_token_may_do_everything(grpc_addr: str) -> None:
    with TaskClient(grpc_addr, token=FULL) as client:
        handle = client.submit("test.echo", {"ok": 1})
        assert [e.sequence for e in handle.watch()][-1] == handle.get().last_sequence


def test_read_token_reads_but_may_not_write(grpc_addr: str) -> None:
    with TaskClient(grpc_addr, token=FULL) as writer:
        task_id = writer.submit("test.echo", {}).id
        labelled = writer.submit("test.echo", {}, labels={"auth": task_id}).id
    with TaskClient(grpc_addr, token=READ) as reader:
        assert reader.wait(task_id, timeout=20)["attempt"] == 1
        assert any(t.id == task_id for t in reader.list(kind="test.echo"))
        assert reader.stats().kinds
        with pytest.raises(NotFoundError):
            reader.get("0" * 32)  # past auth, the usual answers
        with pytest.raises(PermissionDeniedError, match="may only read"):
            reader.submit("test.echo", {})
        with pytest.raises(PermissionDeniedError):
            reader.cancel(task_id)
        # a batch refused as a whole: each item carries the refusal, nothing raised
        [refused] = reader.submit_many([{"kind": "test.echo"}])
        assert isinstance(refused, PermissionDeniedError)
        with reader.watch_group(f"auth={task_id}") as group:  # a read: allowed
            assert next(group).task_id == labelled


def test_health_needs_no_token(grpc_channel: grpc.Channel) -> None:
    reply = health_pb2_grpc.HealthStub(grpc_channel).Check(
        health_pb2.HealthCheckRequest(), timeout=10
    )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
