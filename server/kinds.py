"""ListKinds: the kinds workers registered, with defaults, schema and whether one serves it."""

from __future__ import annotations

from dataclasses import dataclass

from taskcast.core.capacity import LIVE_MS
from taskcast.core.kinds import KindInfo
from taskcast.server.store import ServerStore


@dataclass(frozen=True)
class Kind:
    """One registered kind as ListKinds reports it."""

    name: str
    info: KindInfo
    served: bool  #: a worker registered it within the last 30 s (`LIVE_MS`)


async def listing(store: ServerStore) -> list[Kind]:
    """Every registered kind, by name; `served` compares its record's age on Redis's clock."""
    kinds = await store.kinds(refresh=True)
    now = await store.now()
    return [Kind(name, info, now - info.seen_ms < LIVE_MS) for name, info in sorted(kinds.items())]
