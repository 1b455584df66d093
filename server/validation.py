"""Checks on requests, gathered so one INVALID_ARGUMENT names every bad field at once."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from taskcast.server.errors import InvalidArgument

KIND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
LABEL_KEY_RE = re.compile(r"^[a-z0-9][a-z0-9_./-]{0,62}$")
MAX_LABELS, MAX_LABEL_VALUE = 32, 256
MAX_DELAY_MS = 7 * 24 * 3600 * 1000  # Dramatiq holds delayed messages for at most this long
MAX_TIMEOUT_MS = 24 * 3600 * 1000
MAX_ATTEMPTS = 100


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


def kind(value: str, problems: Problems) -> None:
    """A kind name is 1-128 characters of letters, digits and `_ . : -`."""
    if not value:
        problems.add("kind", "is required, e.g. 'demo.sleep'")
    elif not KIND_RE.match(value):
        problems.add("kind", "must be 1-128 characters: letters, digits, '_', '.', ':' or '-'")


def queue(value: str, problems: Problems) -> None:
    """A queue name is 1-64 characters of letters, digits, `_` and `-`."""
    if value and not QUEUE_RE.match(value):
        problems.add("queue", "must be 1-64 characters: letters, digits, '_' or '-'")


def labels(value: dict[str, str], problems: Problems, field: str = "labels") -> None:
    """At most 32 labels; keys like Kubernetes label names, values up to 256 characters."""
    if len(value) > MAX_LABELS:
        problems.add(field, f"has {len(value)} entries; the limit is {MAX_LABELS}")
    for k, v in value.items():
        if not LABEL_KEY_RE.match(k):
            problems.add(
                f"{field}[{k!r}]", "key must be 1-63 characters: a-z, 0-9, '_', '.', '/', '-'"
            )
        if len(v) > MAX_LABEL_VALUE:
            problems.add(f"{field}[{k!r}]", f"value is longer than {MAX_LABEL_VALUE} characters")


def idempotency_key(value: str, problems: Problems) -> None:
    """At most 256 printable characters."""
    if len(value) > 256 or not value.isprintable():
        problems.add("idempotency_key", "must be at most 256 printable characters")


def task_id(value: str, problems: Problems) -> None:
    """Present and of sane length; an unknown id is NOT_FOUND, not INVALID_ARGUMENT."""
    if not value:
        problems.add("task_id", "is required")
    elif len(value) > 128 or not value.isprintable():
        problems.add("task_id", "must be at most 128 printable characters")


def fingerprint(*parts: Any) -> str:
    """A digest of what makes two submissions "the same request" for idempotency."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def canonical_payload(text: str) -> str:
    """The payload with keys sorted and spacing removed: equal objects compare equal."""
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
