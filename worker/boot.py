"""Entry point for Dramatiq's CLI: `dramatiq taskcast.worker.boot:setup your.module`."""

from __future__ import annotations

import importlib
import logging
import os

import dramatiq

from taskcast.worker.broker import build_broker
from taskcast.worker.registry import registry
from taskcast.worker.runner import make_actor_fn
from taskcast.worker.settings import WorkerSettings

BUILTIN_KINDS = (
    "taskcast.worker.kinds.demo",
    "taskcast.worker.kinds.ai",
    "taskcast.worker.kinds.http",
    "taskcast.worker.kinds.email",
)


def setup() -> None:
    """Build this process's settings and broker, and bind every kind (built-in ones included)."""
    # Dramatiq's CLI sets each worker process to INFO; honour `taskcast --log-level`.
    logging.getLogger().setLevel(os.environ.get("TASKCAST_LOG_LEVEL", "INFO").upper())
    settings = WorkerSettings()
    broker = build_broker(settings, registry)
    dramatiq.set_broker(broker)
    registry.bind(broker, make_actor_fn)
    for module in BUILTIN_KINDS:
        importlib.import_module(module)
