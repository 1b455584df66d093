"""What the built-in kinds share about calling other services: errors, Retry-After, secrets.

TaskcastError
├── RetryAfter
│   └── UpstreamUnavailableError   busy (429), failing (5xx), unreachable or cut off: retry later
└── NonRetryableError
    └── UpstreamRejectedError      refused the request as it stands (most 4xx): retrying cannot help
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterable, Mapping

from taskcast.worker.errors import NonRetryableError, RetryAfter

__all__ = [
    "MAX_RETRY_AFTER",
    "UpstreamRejectedError",
    "UpstreamUnavailableError",
    "Scrubber",
    "retry_after",
    "shorten",
]

#: A Retry-After beyond this many seconds is clamped to it: a bogus date must not park a task for
#: years, and an hour is longer than any rate-limit window seen in practice.
MAX_RETRY_AFTER = 3600.0


class UpstreamUnavailableError(RetryAfter):
    """The remote service was busy, failing or unreachable; retry no sooner than `delay`."""


class UpstreamRejectedError(NonRetryableError):
    """The remote service refused the request as it stands; another attempt cannot help."""


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds a response asks us to wait (`retry-after-ms`, `Retry-After` seconds or date).

    Returns None when the response does not say, and never more than `MAX_RETRY_AFTER`.
    """
    value: float | None = None
    if (ms := headers.get("retry-after-ms")) is not None:
        value = _number(ms)
        value = None if value is None else value / 1000
    if value is None and (raw := headers.get("retry-after")) is not None:
        value = _number(raw)
        if value is None:
            try:
                when = email.utils.parsedate_to_datetime(raw.strip())
            except (TypeError, ValueError, IndexError):
                return None
            value = when.timestamp() - (time.time() if now is None else now)
    if value is None:
        return None
    return min(max(value, 0.0), MAX_RETRY_AFTER)


def _number(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if value == value and value != float("inf") else None  # NaN, inf


class Scrubber:
    """Removes secrets from text bound for events, results, errors and logs."""

    _BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")

    def __init__(self, secrets: Iterable[str | None]) -> None:
        # Longest first, so a secret that contains another is removed whole.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """`text` with every known secret and any bearer token replaced by `[redacted]`."""
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return self._BEARER.sub(lambda m: f"{m.group(1)} [redacted]", text)


def shorten(text: str, limit: int = 300) -> str:
    """One line of at most `limit` characters, for error messages quoting a remote reply."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
