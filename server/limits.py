"""SubmitTask's limit rules: a submit's own concurrency key and limit, checked, and the effective
limits of the task (the kind's declared ones with their keys built from the payload, the submit's
concurrency limit replacing the kind's)."""

from __future__ import annotations

import json

from taskcast.core import limits
from taskcast.core.kinds import KindInfo
from taskcast.core.limits import TaskLimits
from taskcast.server.errors import InvalidArgument
from taskcast.server.validation import Problems


def check(key: str, limit: int, p: Problems) -> None:
    """A submit's concurrency_key and concurrency_limit: both or neither, each in bounds."""
    if not key and not limit:
        return
    if not key:
        p.add("concurrency_key", "is required with concurrency_limit (give both or neither)")
    elif len(key.encode()) > limits.MAX_KEY_BYTES or "\n" in key or "\r" in key:
        p.add("concurrency_key", f"must be 1 to {limits.MAX_KEY_BYTES} bytes without line breaks")
    if not limit:
        p.add("concurrency_limit", "is required with concurrency_key (give both or neither)")
    elif not 1 <= limit <= limits.MAX_CONCURRENCY:
        p.add("concurrency_limit", f"must be between 1 and {limits.MAX_CONCURRENCY:,}")


def effective(kind: str, info: KindInfo, payload: str, key: str, limit: int) -> TaskLimits:
    """The limits the task runs under.

    Raises:
        InvalidArgument: the payload lacks a field a kind's limit key is built from.
    """
    if info.concurrency is None and info.rate is None and not key:
        return TaskLimits()  # the common case: no JSON parse
    data = json.loads(payload)
    try:
        ckey, climit = key, limit
        if not key and info.concurrency is not None:
            ckey = limits.expand(info.concurrency.key, kind, data)
            climit = info.concurrency.limit
        rate = info.rate
        rkey = limits.expand(rate.key, kind, data) if rate is not None else ""
    except limits.LimitKeyError as exc:
        raise InvalidArgument([(exc.field, str(exc))]) from None
    return TaskLimits(
        ckey,
        climit,
        rkey,
        rate.count if rate else 0,
        rate.period_ms if rate else 0,
    )
