"""Prototype worker boot: taskcast's own, with the log level the command line asked for.

`taskcast worker --log-level WARNING` configures the parent only: Dramatiq's CLI sets up logging
in each worker process at INFO (no `-v`), so every task writes an INFO line ("task ... attempt
1: SUCCEEDED") into Dramatiq's log pipe, which the parent reads and prints. This boot function
(`dramatiq bench.experiments.quiet:setup ...`) applies TASKCAST_LOG_LEVEL in the worker process.
"""

from __future__ import annotations

import logging
import os

from taskcast.worker import boot


def setup() -> None:
    """taskcast's boot, then the requested level (default WARNING) on the root logger."""
    boot.setup()
    logging.getLogger().setLevel(os.environ.get("TASKCAST_LOG_LEVEL", "WARNING").upper())
