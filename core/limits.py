"""Per-key concurrency and rate limits: how a kind declares them, and the effective limits a task
carries in its record.

A kind declares `Concurrency(3, key="{payload.customer}")` and/or `Rate("20/s", key=...)`; a
key is a template over the payload (or None: the kind's name, one limit for the whole kind).
Workers register the declaration with the kind (`KindInfo`); the server expands the key from the
payload at submit and stores the effective limits in the task record (`TaskLimits`), so the
`begin` script enforces them without knowing any registry. A submit's own concurrency key and
limit replace the kind's concurrency limit.

A key names a resource, not a kind: tasks of two kinds that name the same key share it (each
checks its own limit against everyone holding the key).

A token budget (`Tokens("90000/m", key="{payload.model}")`) is the worker's alone: the worker
builds its key from the payload when a delivery arrives and hands it to `begin`, because the
tokens an attempt uses are only known when it ends (the handler reports them, `finish` debits
them). It is not stored at submit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_CONCURRENCY",
    "MAX_KEY_BYTES",
    "MAX_RATE",
    "Concurrency",
    "LimitKeyError",
    "Rate",
    "TaskLimits",
    "TokenLimit",
    "Tokens",
    "expand",
]

MAX_CONCURRENCY = 10_000  # attempts running at once under one key
MAX_RATE = 100_000  # starts per period
MAX_TOKENS = 1_000_000_000  # tokens per period
MAX_KEY_BYTES = 128
PERIODS_MS = {"s": 1000, "m": 60_000}
_PLACEHOLDER = re.compile(r"\{payload((?:\.[A-Za-z0-9_-]+)+)\}")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*([sm])\s*$")


class LimitKeyError(ValueError):
    """A limit key cannot be built from the payload; `field` names the missing value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _check_template(key: str | None) -> None:
    if key is None:
        return
    if not key or "\n" in key or len(key.encode()) > MAX_KEY_BYTES:
        raise ValueError(f"a limit key is 1 to {MAX_KEY_BYTES} bytes without line breaks")
    rest = _PLACEHOLDER.sub("", key)
    if "{" in rest or "}" in rest:
        raise ValueError(f"limit key {key!r}: placeholders look like {{payload.field.sub}}")


def _per(spec: str) -> tuple[int, int]:
    """(N, period ms) of a checked "N/s" or "N/m"."""
    m = _RATE.match(spec)
    assert m is not None  # checked by the declaration
    return int(m.group(1)), PERIODS_MS[m.group(2)]


@dataclass(frozen=True)
class Concurrency:
    """At most `limit` attempts with the same key run at once, across all workers.

    `key` is a template such as "{payload.customer}" (or a fixed name); None means the kind's
    name: one limit for the whole kind.
    """

    limit: int
    key: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_CONCURRENCY:
            raise ValueError(f"a concurrency limit is 1 to {MAX_CONCURRENCY:,}")
        _check_template(self.key)


@dataclass(frozen=True)
class Rate:
    """At most `count` attempts with the same key start per `period` ("20/s", "500/m"): in ANY
    window of that length, across all workers (a sliding log in Redis)."""

    spec: str
    key: str | None = None

    def __post_init__(self) -> None:
        m = _RATE.match(self.spec)
        if m is None or not 1 <= int(m.group(1)) <= MAX_RATE:
            raise ValueError(f"a rate is 'N/s' or 'N/m' with N from 1 to {MAX_RATE:,}")
        _check_template(self.key)

    @property
    def count(self) -> int:
        """Starts allowed per period."""
        return _per(self.spec)[0]

    @property
    def period_ms(self) -> int:
        """The period in milliseconds."""
        return _per(self.spec)[1]


@dataclass(frozen=True)
class Tokens:
    """At most `spec` tokens ("90000/m", "2000/s") per key in any window of that length, as the
    handlers report them used (`ctx.used_tokens(n)`), across all workers.

    An attempt starts only while the tokens debited within the last period, plus `reserve` for
    each attempt started within it whose usage is not reported yet, plus its own `reserve`, fit
    the budget. With `reserve` at least what one attempt uses, no window ever exceeds the budget;
    with the default 1, attempts start while the budget is not spent, and one that uses more
    than is left overdraws it (nothing starts until the window is back under budget). An attempt
    that reports no usage keeps its reservation as its debit.

    `key` is a template such as "{payload.model}" (None: the kind's name); `fallback` is the key
    for a payload that lacks a placeholder's field (None: the kind's name).
    """

    spec: str
    key: str | None = None
    reserve: int = 1
    fallback: str | None = None

    def __post_init__(self) -> None:
        m = _RATE.match(self.spec)
        if m is None or not 1 <= int(m.group(1)) <= MAX_TOKENS:
            raise ValueError(f"a token budget is 'N/s' or 'N/m' with N from 1 to {MAX_TOKENS:,}")
        if not 1 <= self.reserve <= int(m.group(1)):
            raise ValueError("a token reservation is 1 to the budget")
        _check_template(self.key)
        _check_template(self.fallback)

    @property
    def budget(self) -> int:
        """Tokens allowed per period."""
        return _per(self.spec)[0]

    @property
    def period_ms(self) -> int:
        """The period in milliseconds."""
        return _per(self.spec)[1]

    @property
    def from_payload(self) -> bool:
        """Whether the key is built from the payload (so the worker must read it)."""
        return self.key is not None and _PLACEHOLDER.search(self.key) is not None

    def of(self, kind: str, payload: Any) -> TokenLimit:
        """The budget a delivery of `kind` with `payload` starts under."""
        try:
            if not isinstance(payload, dict):
                raise LimitKeyError("payload_json", "not an object")
            key = expand(self.key, kind, payload)
        except LimitKeyError:
            key = self.fallback or kind
        return TokenLimit(key, self.budget, self.period_ms, self.reserve)


@dataclass(frozen=True)
class TokenLimit:
    """One attempt's token budget, as `begin` takes it: the key built from its payload."""

    key: str
    budget: int
    period_ms: int
    reserve: int

    def args(self) -> list[Any]:
        """The four `begin` script arguments."""
        return [self.key, self.budget, self.period_ms, self.reserve]


def rate_text(count: int, period_ms: int) -> str:
    """ "20/s" from (20, 1000)."""
    unit = next((u for u, ms in PERIODS_MS.items() if ms == period_ms), None)
    return f"{count}/{unit}" if unit else f"{count}/{period_ms}ms"


def expand(template: str | None, kind: str, payload: dict[str, Any]) -> str:
    """The key `template` names for `payload` (None: the kind's name).

    Raises:
        LimitKeyError: a placeholder names a missing field, or a value that is not a string or
            number, or the key is longer than `MAX_KEY_BYTES`.
    """
    if template is None:
        return kind

    def value(m: re.Match[str]) -> str:
        path = m.group(1)[1:].split(".")
        node: Any = payload
        for part in path:
            if not isinstance(node, dict) or part not in node:
                field = "payload_json." + ".".join(path)
                raise LimitKeyError(field, f"required by the kind's limit key {template!r}")
            node = node[part]
        if isinstance(node, bool) or not isinstance(node, (str, int, float)):
            field = "payload_json." + ".".join(path)
            problem = f"must be a string or number: the limit key {template!r} is built from it"
            raise LimitKeyError(field, problem)
        return str(node)

    key = _PLACEHOLDER.sub(value, template)
    if not key or "\n" in key or len(key.encode()) > MAX_KEY_BYTES:
        raise LimitKeyError("payload_json", f"the limit key must be 1 to {MAX_KEY_BYTES} bytes")
    return key


@dataclass(frozen=True)
class TaskLimits:
    """The limits one task runs under, as its record stores them ("" / 0: none)."""

    concurrency_key: str = ""
    concurrency_limit: int = 0
    rate_key: str = ""
    rate_count: int = 0
    rate_period_ms: int = 0

    def __bool__(self) -> bool:
        return bool(self.concurrency_limit or self.rate_count)

    def args(self) -> list[Any]:
        """The five `submit` script arguments."""
        return [
            self.concurrency_key,
            self.concurrency_limit,
            self.rate_key,
            self.rate_count,
            self.rate_period_ms,
        ]

    @property
    def rate(self) -> str:
        """ "20/s", or "" without a rate."""
        return rate_text(self.rate_count, self.rate_period_ms) if self.rate_count else ""
