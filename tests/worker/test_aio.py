"""The slot loop that async attempts run on."""

from __future__ import annotations

import asyncio

import pytest

from taskcast.worker.aio import new_loop


def test_slot_loop_is_uvloop_where_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = new_loop()
    try:
        assert isinstance(loop, uvloop.Loop)

        async def running() -> asyncio.AbstractEventLoop:
            await asyncio.sleep(0)
            return asyncio.get_running_loop()

        assert loop.run_until_complete(running()) is loop
    finally:
        loop.close()
