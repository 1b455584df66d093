"""Which optional dependencies (pyproject.toml's extras) each `taskcast` command needs.

`pip install taskcast` is the client alone; a command whose extra is missing says which one to
install instead of failing on an import deep inside it.
"""

from __future__ import annotations

import importlib.util
import sys

#: What each extra brings, as top-level modules (pyproject.toml's optional-dependencies, less
#: uvloop, which is optional on every platform; tests/contracts keeps the two the same).
MODULES = {
    "server": (
        "grpc_health",
        "grpc_reflection",
        "grpc_status",
        "dramatiq",
        "redis",
        "hiredis",
        "pydantic_settings",
        "prometheus_client",
        "jsonschema",
        "aiohttp",
    ),
    "worker": (
        "dramatiq",
        "redis",
        "hiredis",
        "pydantic_settings",
        "openai",
        "httpx",
        "httpcore",
        "anyio",
        "prometheus_client",
    ),
    "cli": ("rich",),
}

#: The extras a command needs, and the one to name: `dev` runs everything.
NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "server": (("server",), "server"),
    "worker": (("worker",), "worker"),
    "dev": (("server", "worker", "cli"), "all"),
}
#: The client commands (submit, watch, get, cancel, retry, redrive, ls, stats, kinds) print with
#: rich.
CLIENT_COMMAND_NEEDS = (("cli",), "cli")


def missing(*extras: str) -> list[str]:
    """The modules of these extras that cannot be found, in order, without importing any."""
    names = dict.fromkeys(m for extra in extras for m in MODULES[extra])
    return [name for name in names if not _found(name)]


def installed(*extras: str) -> bool:
    """Whether every module of these extras can be found."""
    return not missing(*extras)


def require(command: str) -> None:
    """Exit with a message naming the extra to install when `command` lacks one."""
    extras, name = NEEDS.get(command, CLIENT_COMMAND_NEEDS)
    absent = missing(*extras)
    if absent:
        sys.exit(
            f"taskcast {command} needs modules this install lacks ({', '.join(absent)}); "
            f"install them with: pip install 'taskcast[{name}]'"
        )


def _found(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a finder that refuses the name, or a broken module
        return False
