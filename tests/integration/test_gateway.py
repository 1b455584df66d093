"""The HTTP/SSE gateway (issue 14, item 1) through a real HTTP client against the real server.

The module's server admits at most 3 watchers, shared by gRPC watches and event streams, and
sends keep-alives only every 60 s: a slot freed before the eventually() deadline was freed by the
disconnect itself, not by a keep-alive write that failed. Events are compared with what the gRPC
watch of the same task gives through the Python client (`Event.to_dict()`), so the two faces
cannot drift apart.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import aiohttp
import pytest
import redis

from taskcast.cli.redis_proc import RedisProcess, free_port
from taskcast.client import TaskClient, TaskHandle
from taskcast.core.layout import Layout
from taskcast.server.app import create_server
from taskcast.server.config import ServerSettings
from tests.sse import Frame, frames, read_all
from tests.support import LoopThread, eventually, settings_for

pytestmark = pytest.mark.usefixtures("worker")
MAX_WATCHERS = 3
ORIGIN = "http://127.0.0.1:5173"


@pytest.fixture(scope="module")
def server_settings(redis_server: RedisProcess, prefix: str) -> ServerSettings:
    """The conftest's settings with the gateway on, 3 watchers and one allowed origin."""
    return settings_for(
        redis_server,
        prefix,
        keepalive=60,
        max_watchers=MAX_WATCHERS,
        http_port=free_port(),
        http_cors_origins=ORIGIN,
    )


@pytest.fixture
def pending(client: TaskClient) -> Iterator[TaskHandle]:
    """A task that stays PENDING (one event at once, then nothing), with no watcher left open
    from an earlier test."""
    eventually(lambda: _open(client) == 0, what="no watch streams open")
    handle = client.submit("test.echo", {"web": True}, delay=3600)
    yield handle
    if not handle.get().state.terminal:
        handle.cancel()


def _open(client: TaskClient) -> int:
    return client.stats().watch_streams_open


async def _all_freed(client: TaskClient) -> None:
    # polled in a thread: this loop must keep running to close the client's sockets
    await asyncio.to_thread(eventually, lambda: _open(client) == 0, what="watcher slots freed")


def _events(found: list[Frame]) -> list[Frame]:
    return [f for f in found if f.event == "message" and f.data]


# GET /v1/tasks/{id}


async def test_get_task_is_the_clients_task_as_a_dict(
    http: aiohttp.ClientSession, base: str, client: TaskClient
) -> None:
    handle = client.submit("test.echo", {"n": 1}, labels={"team": "web"})
    handle.wait(timeout=20)
    async with http.get(f"{base}/{handle.id}") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        body = await response.json()
    assert body == handle.get().to_dict()
    assert body["state"] == "SUCCEEDED" and body["result"] == {"payload": {"n": 1}, "attempt": 1}
    assert body["labels"] == {"team": "web"} and "error" not in body


async def test_unknown_task_is_404_json(http: aiohttp.ClientSession, base: str) -> None:
    for path in ("nope", "nope/events"):
        async with http.get(f"{base}/{path}") as response:
            assert response.status == 404
            assert response.content_type == "application/json"
            error = (await response.json())["error"]
        assert error["code"] == "NOT_FOUND" and "'nope' not found" in error["message"]


async def test_unknown_route_and_bad_input_are_json(http: aiohttp.ClientSession, base: str) -> None:
    async with http.get(f"{base}/x/nothing/here") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "NOT_FOUND"
    async with http.get(f"{base}/{'x' * 200}") as response:
        assert response.status == 400
        body = (await response.json())["error"]
        assert body["code"] == "INVALID_ARGUMENT" and body["violations"][0]["field"] == "task_id"


# GET /v1/tasks/{id}/events


async def test_events_are_the_clients_events_then_an_end_event(
    http: aiohttp.ClientSession, base: str, client: TaskClient
) -> None:
    handle = client.submit("test.chatty", {"n": 5})
    handle.wait(timeout=20)
    async with http.get(f"{base}/{handle.id}/events") as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        found = await read_all(response)
    assert found[0].retry == 1000
    *events, end = _events(found) + [f for f in found if f.event == "end"]
    expected = [e.to_dict() for e in handle.watch()]
    assert [f.json for f in events] == expected
    assert [f.id for f in events] == [str(e["sequence"]) for e in expected]
    assert expected[-1]["state"] == "SUCCEEDED"
    assert (end.event, end.data) == ("end", "{}")
    assert found[-1] is end  # nothing after the end event, and the server closed the stream


async def test_last_event_id_resumes_exactly_once_in_order(
    http: aiohttp.ClientSession, base: str, client: TaskClient
) -> None:
    handle = client.submit("test.chatty", {"n": 20})
    seen: list[Frame] = []
    async with http.get(f"{base}/{handle.id}/events") as response:
        async for frame in frames(response):
            if frame.id is not None:
                seen.append(frame)
            if len(seen) == 7:
                break  # the tab reloads mid-stream
    resume = seen[-1].id
    assert resume is not None
    headers = {"Last-Event-ID": resume}
    async with http.get(f"{base}/{handle.id}/events", headers=headers) as response:
        found = await read_all(response)
    seen += _events(found)
    assert found[-1].event == "end"
    expected = [e.to_dict() for e in handle.watch()]
    assert [f.json for f in seen] == expected
    assert [int(f.id or 0) for f in seen] == list(range(1, len(expected) + 1))
    # ?after= is the same cursor, for a client that cannot set headers
    async with http.get(f"{base}/{handle.id}/events?after={resume}") as response:
        assert [f.json for f in _events(await read_all(response))] == expected[7:]


async def test_a_cursor_that_is_not_a_sequence_is_400(
    http: aiohttp.ClientSession, base: str, pending: TaskHandle
) -> None:
    for bad in ("x", "\u00b2", "-1", "9" * 20):
        async with http.get(f"{base}/{pending.id}/events", headers={"Last-Event-ID": bad}) as r:
            assert r.status == 400, bad
            assert (await r.json())["error"]["violations"][0]["field"] == "Last-Event-ID"
    async with http.get(f"{base}/{pending.id}/events?after=99") as r:  # past its last event
        assert r.status == 400
        assert (await r.json())["error"]["code"] == "INVALID_ARGUMENT"


async def test_an_idle_stream_sends_keep_alive_comments(
    http: aiohttp.ClientSession,
    server_settings: ServerSettings,
    loop_thread: LoopThread,
    pending: TaskHandle,
) -> None:
    changes = {"keepalive": 0.2, "http_port": free_port()}
    running = loop_thread.run(create_server(server_settings.model_copy(update=changes)))
    try:
        url = f"http://127.0.0.1:{running.http_port}/v1/tasks/{pending.id}/events"
        async with http.get(url) as response:
            async for frame in frames(response):
                if frame.comments:
                    assert frame.comments == ["keep-alive"] and not frame.data
                    break
                assert frame.retry == 1000 or frame.json["state"] == "PENDING"
    finally:
        loop_thread.run(running.stop(0.5))


async def test_server_stop_cuts_streams_without_the_end_event(
    http: aiohttp.ClientSession,
    server_settings: ServerSettings,
    loop_thread: LoopThread,
    pending: TaskHandle,
) -> None:
    changes = {"http_port": free_port(), "grace": 5.0}
    running = loop_thread.run(create_server(server_settings.model_copy(update=changes)))
    url = f"http://127.0.0.1:{running.http_port}/v1/tasks/{pending.id}/events"
    stopped = False
    try:
        async with http.get(url) as response:
            seen = []
            async for frame in frames(response):
                seen.append(frame)
                if frame.data:
                    break
            stopping = asyncio.to_thread(loop_thread.run, running.stop(5.0))
            cut, _ = await asyncio.gather(read_all(response), stopping)  # the server closes it
            stopped = True
    finally:
        if not stopped:
            loop_thread.run(running.stop(0.5))
    seen += cut
    assert [f.json["state"] for f in seen if f.data] == ["PENDING"]
    assert all(f.event != "end" for f in seen)  # cut, not ended: the browser resumes


async def test_trimmed_history_is_announced(
    http: aiohttp.ClientSession, base: str, client: TaskClient, rdb: redis.Redis, prefix: str
) -> None:
    handle = client.submit("test.chatty", {"n": 10})
    handle.wait(timeout=20)
    last = handle.get().last_sequence
    rdb.xtrim(Layout(prefix).events(handle.id), minid=f"{last - 3}-0", approximate=False)
    async with http.get(f"{base}/{handle.id}/events") as response:
        events = _events(await read_all(response))
    assert events[0].id is None
    assert events[0].json == next(iter(handle.watch())).to_dict()
    assert events[0].json["first_available_sequence"] == last - 3
    assert [f.id for f in events[1:]] == [str(s) for s in range(last - 3, last + 1)]


# POST /v1/tasks/{id}:cancel


async def test_cancel_then_a_second_cancel_is_409(
    http: aiohttp.ClientSession, base: str, pending: TaskHandle
) -> None:
    url = f"{base}/{pending.id}:cancel"
    async with http.post(url, json={"reason": "user pressed stop"}) as response:
        assert response.status == 200
        body = await response.json()
    assert body == pending.get().to_dict() and body["state"] == "CANCELLED"
    async with http.get(f"{base}/{pending.id}/events") as response:
        events = _events(await read_all(response))
    assert events[-1].json["message"] == "user pressed stop"
    async with http.post(url) as response:
        assert response.status == 409
        assert (await response.json())["error"]["code"] == "FAILED_PRECONDITION"


async def test_cancel_refuses_a_body_that_is_not_a_reason(
    http: aiohttp.ClientSession, base: str, pending: TaskHandle
) -> None:
    url = f"{base}/{pending.id}:cancel"
    for body in ("[1]", "not json", '{"reason": 5}', json.dumps({"reason": "r" * 1025})):
        async with http.post(url, data=body) as response:
            assert response.status == 400, body
            assert (await response.json())["error"]["code"] == "INVALID_ARGUMENT"
    assert pending.get().state == "PENDING"


# Watchers: one budget with gRPC, counted, freed at once


async def test_a_closed_connection_frees_its_watcher_slot(
    http: aiohttp.ClientSession, base: str, client: TaskClient, pending: TaskHandle
) -> None:
    response = await http.get(f"{base}/{pending.id}/events")
    async for frame in frames(response):
        if frame.data:
            break
    assert _open(client) == 1
    response.close()  # the tab is closed: the connection goes, nothing more is read
    await _all_freed(client)


async def test_event_streams_and_grpc_watches_share_max_watchers(
    http: aiohttp.ClientSession, base: str, client: TaskClient, pending: TaskHandle
) -> None:
    url = f"{base}/{pending.id}/events"
    with client.watch(pending.id) as events:
        next(events)
        streams = [await http.get(url) for _ in range(MAX_WATCHERS - 1)]
        assert [r.status for r in streams] == [200] * (MAX_WATCHERS - 1)
        assert _open(client) == MAX_WATCHERS
        async with http.get(url) as refused:
            assert refused.status == 429
            assert refused.headers["Retry-After"] == "1"
            assert (await refused.json())["error"]["code"] == "RESOURCE_EXHAUSTED"
        for r in streams:
            r.close()
    await _all_freed(client)


# CORS


async def test_cors_allows_the_listed_origin_only(
    http: aiohttp.ClientSession, base: str, pending: TaskHandle
) -> None:
    async with http.get(f"{base}/{pending.id}", headers={"Origin": ORIGIN}) as response:
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    async with http.options(
        f"{base}/{pending.id}:cancel",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    ) as response:
        assert response.status == 204
        assert "POST" in response.headers["Access-Control-Allow-Methods"]
        assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    other = {"Origin": "http://127.0.0.1:9999"}
    async with http.get(f"{base}/{pending.id}", headers=other) as response:
        assert "Access-Control-Allow-Origin" not in response.headers
