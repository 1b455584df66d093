"""Both clients against a real server and worker: what the async twin lacked until now."""

from __future__ import annotations

import pytest

from taskcast.client import AsyncTaskClient, DeadlineExceededError, TaskClient, WaitTimeoutError

pytestmark = pytest.mark.usefixtures("worker")


async def test_async_watch_stops_at_its_timeout(grpc_addr: str) -> None:
    async with AsyncTaskClient(grpc_addr) as client:
        handle = await client.submit("test.echo", {"later": True}, delay=3600)
        with pytest.raises(DeadlineExceededError):
            async for _ in handle.watch(timeout=0.5):
                pass
        with pytest.raises(WaitTimeoutError):
            await handle.wait(timeout=0.5)
        await handle.cancel()


def test_sync_watch_stops_at_its_timeout(client: TaskClient) -> None:
    handle = client.submit("test.echo", {"later": True}, delay=3600)
    with pytest.raises(DeadlineExceededError):
        for _ in handle.watch(timeout=0.5):
            pass
    with pytest.raises(WaitTimeoutError):
        handle.wait(timeout=0.5)
    handle.cancel()
