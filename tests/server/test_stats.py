"""GetStats' figures as typed records: the percentiles, and the store's figures from real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from taskcast.cli.redis_proc import RedisProcess
from taskcast.core.layout import DEFAULT_TENANT
from taskcast.core.states import State
from taskcast.server import convert, submit
from taskcast.server.config import ServerSettings
from taskcast.server.fanout import Fanout
from taskcast.server.stats import KindFigures, QueueFigures, percentile
from taskcast.server.store import ServerStore, connect
from taskcast.server.watch import WatchSession


def test_percentiles_take_the_nearest_rank_at_or_above() -> None:
    ordered = list(range(1, 101))  # 1..100 ms
    assert [percentile(ordered, q) for q in (0.5, 0.9, 0.99)] == [51, 91, 100]
    assert percentile([7], 0.99) == 7
    assert percentile([], 0.5) is None


def test_kind_figures_sort_their_samples_and_convert_without_them_unset() -> None:
    figures = KindFigures.from_samples("k", {State.SUCCEEDED: 3}, [30, 10, 20])
    assert (figures.samples, figures.p50_ms, figures.p90_ms, figures.p99_ms) == (3, 20, 30, 30)
    msg = convert.kind_stats_to_pb(figures)
    assert (msg.succeeded, msg.run_time_p50.ToMilliseconds(), msg.run_time_samples) == (3, 20, 3)
    empty = convert.kind_stats_to_pb(KindFigures.from_samples("k", {}, []))
    assert not empty.HasField("run_time_p50") and empty.run_time_samples == 0


@pytest.fixture
async def store(redis_server: RedisProcess, prefix: str) -> AsyncIterator[ServerStore]:
    client = connect(redis_server.url)
    yield ServerStore(
        client, ServerSettings(redis_url=redis_server.url, redis_prefix=prefix).layout
    )
    await client.aclose()


@pytest.mark.usefixtures("worker")
async def test_the_store_reports_typed_figures_per_queue_and_kind(store: ServerStore) -> None:
    settings = ServerSettings(redis_url="redis://127.0.0.1:1", redis_prefix=store.layout.prefix)
    fanout = Fanout(store, 64)
    fanout.start()
    try:
        watches = WatchSession(store, fanout, keepalive=30, max_watchers=10)
        for n in range(3):
            request = submit.SubmitRequest(kind="test.echo", payload_json=f'{{"n": {n}}}')
            record, _ = await store.submit(
                uuid.uuid4().hex, await submit.new_task(request, store, settings)
            )
            _ = [
                item async for item in watches.stream(record.id, 0, DEFAULT_TENANT)
            ]  # until it ended
    finally:
        await fanout.stop()
    queues, kinds = await store.stats(DEFAULT_TENANT)
    default = next(q for q in queues if q.name == "default")
    assert isinstance(default, QueueFigures) and default.running == 0
    echo = next(k for k in kinds if k.kind == "test.echo")
    assert echo.counts[State.SUCCEEDED] == 3 and echo.counts[State.PENDING] == 0
    assert echo.samples == 3 and echo.p50_ms is not None and echo.p99_ms is not None
    assert set(echo.counts) == set(State)
