"""Which waiting task starts first: its priority, and its share among tenants and fairness keys.

A task's `Scheduling` is fixed at submit and kept by every later attempt (a retry, a delay, a
limit's deferral): it is stored in the task hash's `fair` field, which `place()` in
`lua/_lib.lua` reads to put each of its messages in the right bucket, and which `_fetch.lua`
serves in order (docs/architecture.md, "Which task starts next").
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "DEFAULT_PRIORITY",
    "HIGHEST_PRIORITY",
    "LOWEST_PRIORITY",
    "MAX_KEY_BYTES",
    "MAX_WEIGHT",
    "MIN_WEIGHT",
    "Scheduling",
]

HIGHEST_PRIORITY = 1  # as Temporal's priority keys: 1 starts first, 5 last
LOWEST_PRIORITY = 5
DEFAULT_PRIORITY = 3
MAX_KEY_BYTES = 128  # a fairness key
MIN_WEIGHT = 0.01  # a fairness key's or a tenant's weight; 1 by default
MAX_WEIGHT = 100.0


def _number(w: float) -> str:
    return format(w, "g")  # Lua's tonumber reads it back


@dataclass(frozen=True, slots=True)
class Scheduling:
    """A task's place among the waiting ones.

    Among tasks ready on a queue, a lower `priority` number starts first; within a priority,
    starts go round-robin among tenants (a tenant's share in proportion to its `tenant_weight`),
    then within a tenant round-robin among fairness keys (in proportion to `fairness_weight`),
    and each key's tasks start oldest first.
    """

    priority: int = DEFAULT_PRIORITY
    fairness_key: str = ""
    fairness_weight: float = 1.0
    tenant_weight: float = 1.0  # from the tenants file: a caller cannot set its own

    def field(self, tenant: str) -> str:
        """The task hash's `fair` field for a task of `tenant` ("" for the default tenant, as
        scripts are told it); "" when the task waits on the queue's own list, as before."""
        if self.priority == DEFAULT_PRIORITY and not tenant and not self.fairness_key:
            return ""
        weights = (_number(self.tenant_weight), _number(self.fairness_weight))
        return "\n".join((str(self.priority), tenant, self.fairness_key, *weights))

    @classmethod
    def from_field(cls, field: str) -> Scheduling:
        """Read a `fair` field back ("": the defaults)."""
        if not field:
            return cls()
        priority, _tenant, key, tenant_weight, weight = field.split("\n")
        return cls(int(priority), key, float(weight), float(tenant_weight))
