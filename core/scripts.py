"""The Lua scripts that make every state change atomic, and the arguments they share.

Each script is `lua/_lib.lua` followed by its own body; `_lib.lua` documents the shared arguments.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
import redis.asyncio

NAMES = ("submit", "begin", "event", "finish", "cancel", "reap", "abandon")


def _source(name: str) -> str:
    lua = resources.files("taskcast.core") / "lua"
    return (lua / "_lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


SOURCES = {name: _source(name) for name in NAMES}


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch, the unit of every stored time."""
    return time.time_ns() // 1_000_000


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

    def common_args(self, now: int | None = None) -> list[Any]:
        """The five arguments every script starts with (see `_lib.lua`)."""
        return [self.prefix, now or now_ms(), self.max_events, self.retention_s, self.namespace]


def register(client: redis.Redis | redis.asyncio.Redis) -> dict[str, Any]:
    """Register every script on a sync or asyncio client; call with `keys` and `args`."""
    return {name: client.register_script(src) for name, src in SOURCES.items()}
