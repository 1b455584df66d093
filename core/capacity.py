"""What each worker process records about itself for `GetStats`: its queues and its capacity."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

__all__ = ["LIVE_MS", "WorkerRecord"]

# A worker process rewrites its record every 10 s; one older than three missed rounds is gone.
LIVE_MS = 30_000


@dataclass(frozen=True)
class WorkerRecord:
    """One worker process: the queues it consumes, its slots (async) and threads (sync)."""

    id: str
    queues: list[str] = field(default_factory=list)
    slots: int = 0
    slots_used: int = 0
    threads: int = 0
    threads_busy: int = 0
    seen_ms: int = 0

    def to_json(self) -> str:
        """As stored in the `workers` hash."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> WorkerRecord:
        """From the `workers` hash; unknown fields (a newer worker's) are ignored."""
        data = json.loads(raw)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)
