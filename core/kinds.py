"""What a worker records about each kind it serves, and the defaults of a kind that sets none.

A kind whose handler declares a payload model also records the model's JSON schema; servers check
payloads against it at submit. Records written before schemas existed read as "no schema".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from taskcast.core.limits import Concurrency, Rate

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_TIMEOUT_S = 600.0  # an attempt's time limit


@dataclass(frozen=True)
class KindInfo:
    """A kind's defaults as a worker registered them, and when it last did (Redis's ms)."""

    queue: str = DEFAULT_QUEUE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout_ms: int = int(DEFAULT_TIMEOUT_S * 1000)
    seen_ms: int = 0
    #: The payload's JSON schema as canonical JSON text (sorted keys, no spaces); "" for none.
    schema: str = ""
    #: Per-key limits its tasks run under (`core/limits.py`); None: none.
    concurrency: Concurrency | None = None
    rate: Rate | None = None

    def to_json(self) -> str:
        """The stored form (a field of `Layout.kinds()`)."""
        c, r = self.concurrency, self.rate
        return json.dumps(
            {
                "queue": self.queue,
                "max_attempts": self.max_attempts,
                "timeout_ms": self.timeout_ms,
                "seen": self.seen_ms,
                **({"schema": json.loads(self.schema)} if self.schema else {}),
                **({"concurrency": {"limit": c.limit, "key": c.key}} if c else {}),
                **({"rate": {"rate": r.spec, "key": r.key}} if r else {}),
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> KindInfo:
        """Parse the stored form."""
        data = json.loads(raw)
        return cls(
            data["queue"],
            int(data["max_attempts"]),
            int(data["timeout_ms"]),
            int(data.get("seen", 0)),
            canonical(data["schema"]) if data.get("schema") else "",
            _limit(Concurrency, data.get("concurrency"), "limit"),
            _limit(Rate, data.get("rate"), "rate"),
        )


def _limit(cls: Any, data: dict[str, Any] | None, first: str) -> Any:
    """A declared limit from its stored form; None when absent or not valid (a newer worker's)."""
    if not data:
        return None
    try:
        return cls(data[first], data.get("key"))
    except (KeyError, TypeError, ValueError):
        return None


def canonical(schema: dict[str, Any]) -> str:
    """A schema as the one text every worker writes for it: equal schemas, equal texts."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


# What a server assumes of a kind no worker registered yet (TASKCAST_ACCEPT_ANY_KIND).
ANY_KIND = KindInfo()
