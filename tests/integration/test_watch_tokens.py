"""Watch tokens (issue 14, item 2) and the gateway's token rules, through a real HTTP client.

The module's server requires tokens (a full one and a read-only one) and keeps its watch-token
key in Redis; a second server on the same Redis verifies the first one's tokens, and a third with
its own TASKCAST_TOKEN_SECRET does not.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterator

import aiohttp
import pytest

from taskcast.cli.redis_proc import RedisProcess, free_port
from taskcast.client import (
    AsyncTaskClient,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    TaskClient,
    TaskHandle,
    UnauthenticatedError,
)
from taskcast.server.app import Running, create_server
from taskcast.server.config import ServerSettings
from tests.sse import read_all
from tests.support import LoopThread, eventually, settings_for

pytestmark = pytest.mark.usefixtures("worker")
FULL, READ = "s3cret-full", "s3cret-read"
BEARER_FULL = {"Authorization": f"Bearer {FULL}"}


@pytest.fixture(scope="module")
def server_settings(redis_server: RedisProcess, prefix: str) -> ServerSettings:
    """This module's server requires tokens and serves the gateway."""
    return settings_for(
        redis_server, prefix, auth_tokens=FULL, read_tokens=READ, http_port=free_port()
    )


@pytest.fixture(scope="module")
def writer(grpc_addr: str) -> Iterator[TaskClient]:
    """A client with the full-access token."""
    with TaskClient(grpc_addr, token=FULL, reconnect_for=20) as c:
        yield c


@pytest.fixture
def pending(writer: TaskClient) -> Iterator[TaskHandle]:
    """A task that stays PENDING for the test."""
    handle = writer.submit("test.echo", {"web": True}, delay=3600)
    yield handle
    if not handle.get().state.terminal:
        handle.cancel()


async def _status(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: object
) -> tuple[int, str]:
    async with http.request(method, url, **kwargs) as response:  # type: ignore[arg-type]
        body = await response.json()
        return response.status, body["error"]["code"] if "error" in body else body["state"]


def _routes(base: str, task_id: str, token: str) -> list[tuple[str, str]]:
    return [
        ("GET", f"{base}/{task_id}?token={token}"),
        ("GET", f"{base}/{task_id}/events?token={token}"),
        ("POST", f"{base}/{task_id}:cancel?token={token}"),
    ]


# The RPC


def test_create_watch_token_needs_full_access_and_a_task(
    grpc_addr: str, writer: TaskClient, pending: TaskHandle
) -> None:
    with (
        TaskClient(grpc_addr, token=READ) as reader,
        pytest.raises(PermissionDeniedError, match="may only read"),
    ):
        reader.watch_token(pending.id)
    with pytest.raises(NotFoundError):
        writer.watch_token("0" * 32)
    for ttl in (0.5, dt.timedelta(hours=24, seconds=1), -5.0):
        with pytest.raises(InvalidArgumentError, match="ttl: must be 1 second to 24 hours"):
            writer.watch_token(pending.id, ttl=ttl)
    token = writer.watch_token(pending.id, ttl=dt.timedelta(hours=24))
    body = token.split(".")[0]
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert claims["task"] == pending.id and claims["cancel"] is False and claims["v"] == 1
    assert len(token) < 160


async def test_the_async_client_issues_tokens_too(grpc_addr: str, pending: TaskHandle) -> None:
    async with AsyncTaskClient(grpc_addr, token=FULL) as aclient:
        token = await aclient.watch_token(pending.id, ttl=60, cancel=True)
    body = token.split(".")[0]
    assert json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["cancel"] is True


def test_a_watch_token_is_not_accepted_on_grpc(grpc_addr: str, writer: TaskClient) -> None:
    handle = writer.submit("test.echo", {})
    token = writer.watch_token(handle.id)
    with TaskClient(grpc_addr, token=token) as browser_like:
        with pytest.raises(UnauthenticatedError, match="unknown token"):
            browser_like.get(handle.id)
        with pytest.raises(UnauthenticatedError):
            list(browser_like.watch(handle.id))


# What a watch token opens


async def test_a_watch_token_opens_its_task_in_the_url_or_the_header(
    http: aiohttp.ClientSession, base: str, writer: TaskClient
) -> None:
    handle = writer.submit("test.chatty", {"n": 3})
    token = writer.watch_token(handle.id)
    async with http.get(f"{base}/{handle.id}/events?token={token}") as response:
        assert response.status == 200
        found = await read_all(response)
    events = [f.json for f in found if f.event == "message" and f.data]
    assert events == [e.to_dict() for e in handle.watch()]
    assert found[-1].event == "end"
    header = {"Authorization": f"Bearer {token}"}
    async with http.get(f"{base}/{handle.id}", headers=header) as response:
        assert response.status == 200
        assert (await response.json())["state"] == "SUCCEEDED"


async def test_a_watch_token_opens_nothing_else(
    http: aiohttp.ClientSession, base: str, writer: TaskClient, pending: TaskHandle
) -> None:
    other = writer.submit("test.echo", {"other": True}, delay=3600)
    token = writer.watch_token(pending.id, cancel=True)
    try:
        for method, url in _routes(base, other.id, token):
            status, code = await _status(http, method, url)
            assert (status, code) == (403, "PERMISSION_DENIED"), url
        assert other.get().state == "PENDING"
    finally:
        other.cancel()


async def test_cancel_needs_the_cancel_right(
    http: aiohttp.ClientSession, base: str, writer: TaskClient, pending: TaskHandle
) -> None:
    url = f"{base}/{pending.id}:cancel?token="
    watch_only = writer.watch_token(pending.id)
    assert await _status(http, "POST", url + watch_only) == (403, "PERMISSION_DENIED")
    assert pending.get().state == "PENDING"
    may_cancel = writer.watch_token(pending.id, cancel=True)
    assert await _status(http, "POST", url + may_cancel) == (200, "CANCELLED")


async def test_expired_token_is_401(
    http: aiohttp.ClientSession, base: str, writer: TaskClient, pending: TaskHandle
) -> None:
    token = writer.watch_token(pending.id, ttl=1)
    url = f"{base}/{pending.id}?token={token}"
    assert await _status(http, "GET", url) == (200, "PENDING")
    eventually(lambda: _sync_status(url) == 401, what="the token to expire")
    async with http.get(url) as response:
        assert "expired" in (await response.json())["error"]["message"]


def _sync_status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _tampered(token: str, task_id: str) -> list[str]:
    body, _, sig = token.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged = {**claims, "task": task_id, "cancel": True}
    forged_body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    return [
        f"{forged_body}.{sig}",  # another task, the old signature
        f"{body}.{flipped}",  # the signature altered
        f"{body}.{sig[:-1]}",  # cut short
        f"{body}",  # no signature at all
        f"x{body}.{sig}",  # the claims altered
    ]


async def test_tampered_tokens_are_401(
    http: aiohttp.ClientSession, base: str, writer: TaskClient, pending: TaskHandle
) -> None:
    other = writer.submit("test.echo", {}, delay=3600)
    try:
        token = writer.watch_token(pending.id)
        for bad in _tampered(token, other.id):
            for task_id in (pending.id, other.id):
                for method, url in _routes(base, task_id, bad):
                    assert await _status(http, method, url) == (401, "UNAUTHENTICATED"), bad
        assert other.get().state == "PENDING" and pending.get().state == "PENDING"
    finally:
        other.cancel()


# The server's own tokens on the gateway


async def test_gateway_takes_the_grpc_tokens_in_the_header_only(
    http: aiohttp.ClientSession, base: str, pending: TaskHandle
) -> None:
    url = f"{base}/{pending.id}"
    assert await _status(http, "GET", url) == (401, "UNAUTHENTICATED")
    async with http.get(url) as response:
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert await _status(http, "GET", url, headers={"Authorization": "Bearer x"}) == (
        401,
        "UNAUTHENTICATED",
    )
    # A full token is a credential for everything: never taken from a URL, where logs keep it.
    assert await _status(http, "GET", f"{url}?token={FULL}") == (401, "UNAUTHENTICATED")
    reader = {"Authorization": f"Bearer {READ}"}
    assert await _status(http, "GET", url, headers=reader) == (200, "PENDING")
    assert await _status(http, "POST", f"{base}/{pending.id}:cancel", headers=reader) == (
        403,
        "PERMISSION_DENIED",
    )
    assert await _status(http, "POST", f"{base}/{pending.id}:cancel", headers=BEARER_FULL) == (
        200,
        "CANCELLED",
    )


# Keys: shared through Redis by every replica; a configured secret is its own key


async def test_another_replica_verifies_tokens_and_another_secret_does_not(
    http: aiohttp.ClientSession,
    server_settings: ServerSettings,
    loop_thread: LoopThread,
    writer: TaskClient,
    pending: TaskHandle,
) -> None:
    token = writer.watch_token(pending.id)
    replicas: list[Running] = []
    try:
        for secret in ("", "x" * 32):
            changes = {"http_port": free_port(), "token_secret": secret}
            settings = server_settings.model_copy(update=changes)
            replicas.append(loop_thread.run(create_server(settings)))
        same_key, own_secret = (
            f"http://127.0.0.1:{r.http_port}/v1/tasks/{pending.id}?token={token}" for r in replicas
        )
        assert await _status(http, "GET", same_key) == (200, "PENDING")
        assert await _status(http, "GET", own_secret) == (401, "UNAUTHENTICATED")
    finally:
        for r in replicas:
            loop_thread.run(r.stop(0.5))
