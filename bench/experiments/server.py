"""Prototype server: `taskcast server` with proposed changes applied at start-up.

`python -m bench.experiments.server [--uvloop] [--pool N] [--gc-log] [--gc-freeze]`,
configured by the same TASKCAST_* variables as `taskcast server`.

- `--uvloop`: the event loop is uvloop's (it must be importable, e.g. through PYTHONPATH).
- `--pool N`: the Redis client waits for one of N connections instead of failing with "Too many
  connections" past redis-py's default of 100 in flight.
- `--gc-log`: log every garbage collection that takes over 5 ms (generation, ms, objects).
- `--no-wait-for`: WatchTask waits for its next event under `asyncio.timeout()` instead of
  `asyncio.wait_for()`, which on Python 3.11 wraps every wait in a new Task.
- `--gc-freeze`: after start-up, move everything alive to the permanent generation and collect
  the young generations less often (fewer, shorter pauses with thousands of streams).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

from taskcast.server import store as store_mod
from taskcast.server.config import ServerSettings

log = logging.getLogger("taskcast.server")


def pool(size: int) -> None:
    """The server's Redis client on a BlockingConnectionPool of `size`."""
    import redis.asyncio as aredis

    from taskcast.server import app

    def connect(url: str) -> aredis.Redis:
        client: aredis.Redis = store_mod.connect(url)
        kwargs = dict(client.connection_pool.connection_kwargs)
        client.connection_pool = aredis.BlockingConnectionPool(
            connection_class=client.connection_pool.connection_class,
            max_connections=size,
            timeout=5,
            **kwargs,
        )
        return client

    app.connect = connect


def gc_log() -> None:
    """Log slow collections to stderr (the server's log file)."""
    import gc
    import sys
    import time

    started: list[float] = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - started[0]) * 1000
        if ms > 5:
            print(
                f"gc gen{info['generation']} {ms:.1f} ms, {len(gc.get_objects())} objects",
                file=sys.stderr,
                flush=True,
            )

    gc.callbacks.append(callback)


def no_wait_for() -> None:
    """The servicer's `asyncio.wait_for` becomes a wait under `asyncio.timeout`."""
    from taskcast.server import servicer

    class _Asyncio:
        def __getattr__(self, name: str) -> object:
            return getattr(asyncio, name)

        @staticmethod
        async def wait_for(awaitable: Any, timeout: float | None) -> Any:
            async with asyncio.timeout(timeout):
                return await awaitable

    setattr(servicer, "asyncio", _Asyncio())  # noqa: B010 - the module's name, replaced


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--uvloop", action="store_true")
    p.add_argument("--pool", type=int, default=0)
    p.add_argument("--gc-log", action="store_true")
    p.add_argument("--gc-freeze", action="store_true")
    p.add_argument("--no-wait-for", action="store_true")
    p.add_argument("--log-level", default="WARNING")
    args = p.parse_args()
    if args.pool:
        pool(args.pool)
    if args.gc_log:
        gc_log()
    if args.no_wait_for:
        no_wait_for()
    logging.basicConfig(level=args.log_level.upper())
    from taskcast.server.app import serve

    settings = ServerSettings()
    if args.gc_freeze:
        import gc

        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 1000)
    if args.uvloop:
        import uvloop

        uvloop.run(serve(settings))
    else:
        asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
