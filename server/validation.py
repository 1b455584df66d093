"""Checks on requests, gathered so one INVALID_ARGUMENT names every bad field at once."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from taskcast.server.errors import InvalidArgument, clip

# Applied with fullmatch: `$` would also accept a trailing newline ("team\n", "evil\n").
KIND_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
QUEUE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
LABEL_KEY_RE = re.compile(r"[a-z0-9][a-z0-9_./-]{0,62}")
MAX_LABELS, MAX_LABEL_VALUE = 32, 256
MAX_DELAY_MS = 7 * 24 * 3600 * 1000  # Dramatiq holds delayed messages for at most this long
MAX_TIMEOUT_MS = 24 * 3600 * 1000
MAX_ATTEMPTS = 100
# google.protobuf.Timestamp: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z
MIN_TIMESTAMP_S, MAX_TIMESTAMP_S = -62_135_596_800, 253_402_300_799
MAX_DURATION_S = 315_576_000_000  # google.protobuf.Duration: +-10,000 years
MAX_NANOS = 999_999_999


class Problems:
    """Collects field violations; `check()` raises them together."""

    def __init__(self) -> None:
        self.violations: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        """Record one bad field."""
        self.violations.append((field, description))

    def check(self) -> None:
        """Raise InvalidArgument if anything was recorded."""
        if self.violations:
            raise InvalidArgument(self.violations)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def payload(text: str, limit: int, problems: Problems) -> str:
    """The payload text if it is a JSON object within `limit` bytes ("" means "{}")."""
    if not text:
        return "{}"
    size = len(text.encode())
    if size > limit:
        problems.add("payload_json", f"is {size} bytes; the limit is {limit}")
        return text
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        problems.add("payload_json", f"is not valid JSON: {exc}")
        return text
    if not isinstance(value, dict):
        problems.add("payload_json", f"must be a JSON object, got {type(value).__name__}")
    return text


def kind(value: str, problems: Problems, field: str = "kind") -> None:
    """A kind name is 1-128 characters of letters, digits and `_ . : -`."""
    if not value:
        problems.add(field, "is required, e.g. 'demo.sleep'")
    elif not KIND_RE.fullmatch(value):
        problems.add(field, "must be 1-128 characters: letters, digits, '_', '.', ':' or '-'")


def queue(value: str, problems: Problems) -> None:
    """A queue name is 1-64 characters of letters, digits, `_` and `-`."""
    if value and not QUEUE_RE.fullmatch(value):
        problems.add("queue", "must be 1-64 characters: letters, digits, '_' or '-'")


def labels(value: dict[str, str], problems: Problems, field: str = "labels") -> None:
    """At most 32 labels; keys like Kubernetes label names, values up to 256 characters."""
    if len(value) > MAX_LABELS:
        problems.add(field, f"has {len(value)} entries; the limit is {MAX_LABELS}")
    for k, v in value.items():
        name = f"{field}[{clip(k)!r}]"  # the key echoed, bounded (a 5 KB key made 20 KB errors)
        if not LABEL_KEY_RE.fullmatch(k):
            problems.add(
                name, "key must be 1-63 characters: a-z or 0-9 first, then a-z, 0-9, '_.-/'"
            )
        if len(v) > MAX_LABEL_VALUE:
            problems.add(name, f"value is longer than {MAX_LABEL_VALUE} characters")


RESERVED_KEY_PREFIX = "taskcast."  # idempotency keys of taskcast's own tasks (a redrive's)


def idempotency_key(value: str, problems: Problems, field: str = "idempotency_key") -> None:
    """At most 256 printable characters (also a RetryTask's and a redrive's request_id)."""
    if len(value) > 256 or not value.isprintable():
        problems.add(field, "must be at most 256 printable characters")


def submit_key(value: str, problems: Problems) -> None:
    """A SubmitTask's idempotency key: as `idempotency_key`, and not `RESERVED_KEY_PREFIX`'s.
    Else a submit could take the key of a RedriveTasks operation's task, and that request would
    answer with the caller's task as its operation."""
    idempotency_key(value, problems)
    if value.startswith(RESERVED_KEY_PREFIX):
        problems.add(
            "idempotency_key", f"keys starting with {RESERVED_KEY_PREFIX!r} are taskcast's own"
        )


def task_id(value: str, problems: Problems) -> None:
    """Present and of sane length; an unknown id is NOT_FOUND, not INVALID_ARGUMENT."""
    if not value:
        problems.add("task_id", "is required")
    elif len(value) > 128 or not value.isprintable():
        problems.add("task_id", "must be at most 128 printable characters")


def reason(value: str, problems: Problems) -> None:
    """A cancel reason: at most 1024 characters."""
    if len(value) > 1024:
        problems.add("reason", "must be at most 1024 characters")


def timestamp_ms(value: tuple[int, int] | None, field: str, problems: Problems) -> int | None:
    """Epoch milliseconds of a Timestamp given as (seconds, nanos); None when unset or invalid.

    Refused rather than normalised: nanos outside 0..999,999,999, or a time outside the years
    1 to 9999 (what google.protobuf.Timestamp allows).
    """
    if value is None:
        return None
    seconds, nanos = value
    if not 0 <= nanos <= MAX_NANOS:
        problems.add(f"{field}.nanos", f"must be 0 to {MAX_NANOS}, got {nanos}")
    elif not MIN_TIMESTAMP_S <= seconds <= MAX_TIMESTAMP_S:
        problems.add(f"{field}.seconds", f"must be within the years 1 to 9999, got {seconds}")
    else:
        return seconds * 1000 + nanos // 1_000_000
    return None


def duration_ms(value: tuple[int, int] | None, field: str, problems: Problems) -> int | None:
    """Milliseconds of a Duration given as (seconds, nanos), toward zero; None when unset or bad.

    Refused rather than normalised: |nanos| over 999,999,999, seconds and nanos of opposite
    signs, or |seconds| over 315,576,000,000 (what google.protobuf.Duration allows).
    """
    if value is None:
        return None
    seconds, nanos = value
    if not -MAX_NANOS <= nanos <= MAX_NANOS:
        problems.add(f"{field}.nanos", f"must be -{MAX_NANOS} to {MAX_NANOS}, got {nanos}")
    elif (seconds < 0 < nanos) or (nanos < 0 < seconds):
        problems.add(field, "seconds and nanos must not have opposite signs")
    elif not -MAX_DURATION_S <= seconds <= MAX_DURATION_S:
        problems.add(f"{field}.seconds", f"must be within +-{MAX_DURATION_S}, got {seconds}")
    else:
        whole = abs(nanos) // 1_000_000
        return seconds * 1000 + (whole if nanos >= 0 else -whole)
    return None


def listing(names: list[str], budget: int = 320) -> str:
    """Names joined by commas, as many as fit in `budget` characters: for echoing in errors."""
    shown: list[str] = []
    for name in names:
        if shown and len(", ".join([*shown, clip(name)])) > budget:
            break
        shown.append(clip(name))
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def fingerprint(*parts: Any) -> str:
    """A digest of what makes two submissions "the same request" for idempotency."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def canonical_payload(text: str) -> str:
    """The payload with keys sorted and spacing removed: equal objects compare equal."""
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
