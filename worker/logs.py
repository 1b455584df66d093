"""Every log line written while an attempt runs names it: `task_id`, `kind` and `attempt`."""

from __future__ import annotations

import logging

from taskcast.worker import attempt as attempts

__all__ = ["AttemptFilter"]


class AttemptFilter(logging.Filter):
    """Adds the current attempt's `task_id`, `kind` and `attempt` to each record.

    It sits on the handlers, not on a logger: a logger's filters see only records logged through
    that very logger, and a handler's see every record that reaches it, the handler's own and
    libraries' (httpx, openai) alike. The attempt comes from its ContextVar, so it is right in a
    worker thread (sync kinds) and in each asyncio task on the slot loop (async kinds).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Name the attempt on `record` (when one runs here); never drops a record."""
        attempt = attempts.current()
        if attempt is not None and not hasattr(record, "task_id"):
            record.task_id = attempt.task_id
            record.kind = attempt.kind
            record.attempt = attempt.number
        return True
