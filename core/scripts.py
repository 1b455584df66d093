"""The Lua scripts that make every state change atomic, and the arguments they share.

Each script is `lua/_lib.lua` followed by its own body; `_lib.lua` documents the shared arguments.
Every time stored or compared with a stored one is Redis's clock (`TIME` in `_lib.lua`), never a
process's: one host whose clock runs ahead would otherwise judge live leases expired.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
import redis.asyncio

NAMES = (
    "submit",
    "begin",
    "event",
    "finish",
    "cancel",
    "reap",
    "abandon",
    "renew",
    "expired",
    "prune",
)


def _source(name: str) -> str:
    lua = resources.files("taskcast.core") / "lua"
    return (lua / "_lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


SOURCES = {name: _source(name) for name in NAMES}


def now_ms() -> int:
    """This process's wall clock in epoch milliseconds: only for checking a client's input.

    Never store it or compare it with a stored time: those use Redis's clock (`redis_ms`).
    """
    return time.time_ns() // 1_000_000


def redis_ms(reply: tuple[int, int] | list[int]) -> int:
    """Epoch milliseconds from a Redis `TIME` reply (seconds, microseconds)."""
    return int(reply[0]) * 1000 + int(reply[1]) // 1000


@dataclass(frozen=True)
class Layout:
    """Where taskcast keeps things in one Redis: key prefix, Dramatiq namespace, limits."""

    prefix: str = "taskcast"
    max_events: int = 10_000
    retention_s: int = 7 * 24 * 3600

    @property
    def namespace(self) -> str:
        """The Dramatiq RedisBroker namespace."""
        return f"{self.prefix}:mq"

    def task(self, task_id: str) -> str:
        """The hash that holds one task."""
        return f"{self.prefix}:t:{task_id}"

    def events(self, task_id: str) -> str:
        """The stream of one task's events; entry id `<sequence>-0`."""
        return f"{self.prefix}:e:{task_id}"

    def key(self, *parts: str) -> str:
        """Any other key: `prefix:part:part`."""
        return ":".join((self.prefix, *parts))

    def common_args(self) -> list[Any]:
        """The four arguments every script starts with (see `_lib.lua`)."""
        return [self.prefix, self.max_events, self.retention_s, self.namespace]


def register(client: redis.Redis | redis.asyncio.Redis) -> dict[str, Any]:
    """Register every script on a sync or asyncio client; call with `keys` and `args`."""
    return {name: client.register_script(src) for name, src in SOURCES.items()}
