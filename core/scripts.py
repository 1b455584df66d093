"""The Lua scripts that make every state change atomic, and the arguments they share.

Each script is `lua/_lib.lua` followed by its own body; `_lib.lua` documents the shared arguments.
`calls.py` builds each script's keys and arguments and reads its reply.
Every time stored or compared with a stored one is Redis's clock (`TIME` in `_lib.lua`), never a
process's: one host whose clock runs ahead would otherwise judge live leases expired.
"""

from __future__ import annotations

import time
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
    "retry",
    "reap",
    "abandon",
    "renew",
    "expired",
    "prune",
    "compact",
    "wake",
    "limits",
    "route",
    "requeue",
    "admit",
    "watch",
)
# Pieces a script needs besides `_lib.lua`, prepended in this order.
INCLUDES = {"begin": ("_limits",), "finish": ("_limits",), "limits": ("_limits",)}


def _source(name: str) -> str:
    lua = resources.files("taskcast.core") / "lua"
    parts = ("_lib", *INCLUDES.get(name, ()), name)
    return "\n".join((lua / f"{part}.lua").read_text() for part in parts)


SOURCES = {name: _source(name) for name in NAMES}

# Where `_fetch.lua` goes in Dramatiq's dispatch.lua: before its first command, after its locals,
# heartbeat and maintenance (dramatiq>=2.2,<2.3 in pyproject.toml; tests/unit checks the marker).
DISPATCH_MARKER = 'if command == "enqueue" then'


def dispatch(dramatiq_source: str) -> str:
    """Dramatiq's dispatch.lua with taskcast's fetch (priorities, fair share) inserted.

    Raises:
        RuntimeError: The source no longer has the place the fetch goes (another Dramatiq).
    """
    at = dramatiq_source.find(DISPATCH_MARKER)
    if at < 0:
        raise RuntimeError(
            'Dramatiq\'s dispatch.lua has no `if command == "enqueue"`: this Dramatiq is not '
            "the 2.2 taskcast's transport is written for"
        )
    fetch = (resources.files("taskcast.core") / "lua" / "_fetch.lua").read_text()
    return dramatiq_source[:at] + fetch + "\n" + dramatiq_source[at:]


def now_ms() -> int:
    """This process's wall clock in epoch milliseconds: only for checking a client's input.

    Never store it or compare it with a stored time: those use Redis's clock (`redis_ms`).
    """
    return time.time_ns() // 1_000_000


def redis_ms(reply: tuple[int, int] | list[int]) -> int:
    """Epoch milliseconds from a Redis `TIME` reply (seconds, microseconds)."""
    return int(reply[0]) * 1000 + int(reply[1]) // 1000


def register(client: redis.Redis | redis.asyncio.Redis) -> dict[str, Any]:
    """Register every script on a sync or asyncio client; call with `keys` and `args`."""
    return {name: client.register_script(src) for name, src in SOURCES.items()}
