"""Where taskcast keeps things in one Redis: every key name, spelt here and nowhere else.

The Lua scripts (`lua/_lib.lua` and each script) build the same names from the prefix they are
given; Dramatiq's own keys (queues, delay queues, dead letters) are `mqlayout.MQLayout`'s.

Tenants: what a tenant lists or counts (indexes, idempotency keys, per-kind statistics and run
times) lives under `<prefix>:tn:<tenant>:...` (`Layout.of(tenant)`); the default tenant's keys
keep the names they had before tenants, so existing data needs no migration. A task's own keys
(hash, events), queues, leases, channels and the worker and kind registries are shared: ids are
random and the owner check is one function (server/store.py), see docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from taskcast.core.mqlayout import MQLayout

PREFIX = "taskcast"
MAX_EVENTS = 10_000  # events kept per task; older ones are trimmed
RETENTION_S = 7 * 24 * 3600  # how long a finished task is kept
DEFAULT_TENANT = "default"  # the tenant of tasks stored without one, and of a server without tokens


@dataclass(frozen=True)
class Layout:
    """The key names under one prefix, and the limits every script is given."""

    prefix: str = PREFIX
    max_events: int = MAX_EVENTS
    retention_s: int = RETENTION_S
    tenant: str = DEFAULT_TENANT  # whose indexes, idempotency keys and statistics (`of`)

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _scoped(self, *parts: str) -> str:
        """A key of this layout's tenant: the default tenant's has no tenant segment."""
        if self.tenant == DEFAULT_TENANT:
            return self._key(*parts)
        return self._key("tn", self.tenant, *parts)

    def of(self, tenant: str) -> Layout:
        """This layout for `tenant`'s keys (the shared ones stay the same)."""
        return self if tenant == self.tenant else replace(self, tenant=tenant)

    @staticmethod
    def tenant_arg(tenant: str) -> str:
        """How a script is told the tenant: "" for the default one (`scope()` in `_lib.lua`)."""
        return "" if tenant == DEFAULT_TENANT else tenant

    @property
    def namespace(self) -> str:
        """The Dramatiq RedisBroker namespace."""
        return self._key("mq")

    @property
    def mq(self) -> MQLayout:
        """Dramatiq's keys (queues, delay queues, dead letters, wake-up lists) in the namespace."""
        return MQLayout(self.namespace)

    def common_args(self) -> list[Any]:
        """The four arguments every script starts with (see `_lib.lua`)."""
        return [self.prefix, self.max_events, self.retention_s, self.namespace]

    # One task
    def task(self, task_id: str) -> str:
        """The hash that holds one task."""
        return self._key("t", task_id)

    def events(self, task_id: str) -> str:
        """The stream of one task's events; entry id `<sequence>-0`."""
        return self._key("e", task_id)

    # A task's hash also keeps, once compacted (compact.lua), its terminal event as `tail`.
    def once(self, task_id: str, key: str) -> str:
        """The stored result of a side effect a task runs once (`TaskContext.once`)."""
        return self._key("once", task_id, key)

    def idempotency(self, key: str) -> str:
        """The string `<task id>|<fingerprint>` a client's idempotency key points to (per
        tenant)."""
        return self._scoped("idem", key)

    # Bulk operations (by operation id, global like task ids)
    def redrive(self, op_id: str) -> str:
        """The hash of a RedriveTasks operation's progress: total, cursor, retried, skipped."""
        return self._key("redrive", op_id)

    def redrive_ids(self, op_id: str) -> str:
        """The list of task ids a RedriveTasks operation selected, oldest first."""
        return self._key("redrive", op_id, "ids")

    # Indexes (per tenant): sorted sets of task ids scored by creation time
    def index_all(self) -> str:
        """Every task."""
        return self._scoped("idx", "all")

    def index_state(self, state: str) -> str:
        """The tasks in one state."""
        return self._scoped("idx", "state", state)

    def index_kind(self, kind: str) -> str:
        """The tasks of one kind."""
        return self._scoped("idx", "kind", kind)

    def index_label(self, label: str) -> str:
        """The tasks with one label, given as `label_member(k, v)`."""
        return self._scoped("idx", "label", label)

    @staticmethod
    def label_member(name: str, value: str) -> str:
        """A label as its index and the labels set name it: `name=value`."""
        return f"{name}={value}"

    def indexed_kinds(self) -> str:
        """The set of kinds that have an index."""
        return self._scoped("idx", "kinds")

    def indexed_labels(self) -> str:
        """The set of labels that have an index."""
        return self._scoped("idx", "labels")

    def tenants(self) -> str:
        """The set of tenants other than the default one that ever submitted (for the pruner)."""
        return self._key("tenants")

    # Registries, leases and channels
    def kinds(self) -> str:
        """The hash of kinds workers serve: kind -> `KindInfo` JSON."""
        return self._key("kinds")

    def workers(self) -> str:
        """The hash of live worker processes: id -> `WorkerRecord` JSON."""
        return self._key("workers")

    def leases(self) -> str:
        """The sorted set of running attempts' task ids, scored by lease end (Redis's ms)."""
        return self._key("leases")

    def cancel_channel(self) -> str:
        """The pub/sub channel that carries the ids of running tasks asked to stop."""
        return self._key("cancel")

    def live_channel(self) -> str:
        """The pub/sub channel that carries every event as it is written."""
        return self._key("live")

    def watched(self) -> str:
        """The sorted set of tasks some server watches, scored by when that interest lapses
        (Redis ms): only their events are published on the live channel (`emit` in _lib.lua)."""
        return self._key("watched")

    def finished(self) -> str:
        """The sorted set of finished tasks not yet compacted, scored by finish time (Redis ms)."""
        return self._key("fin")

    def watch_token_key(self) -> str:
        """The random key that signs watch tokens when TASKCAST_TOKEN_SECRET is not set (made
        once, SET NX, so every server process of the deployment verifies every other's)."""
        return self._key("watch-token-key")

    def prune_lock(self) -> str:
        """The lock that lets one worker per interval sweep the indexes."""
        return self._key("prune-lock")

    # Per-key limits (core/lua/_limits.lua)
    def limit_running(self, key: str) -> str:
        """The sorted set of task ids running under a concurrency key, scored by lease end."""
        return self._key("lim", "c", key)

    def limit_starts(self, key: str) -> str:
        """The sorted set of a rate key's starts within its period (the sliding log)."""
        return self._key("lim", "r", key)

    def limit_tokens(self, key: str) -> str:
        """The sorted set of a token key's attempts within its period, "<id>:<attempt>:<tokens>"
        by start (reserved, then used)."""
        return self._key("lim", "t", key)

    def limit_token_sum(self, key: str) -> str:
        """The tokens a token key's log holds, kept beside it (`limit_tokens`)."""
        return self._key("lim", "ts", key)

    def limit_reserved(self, key: str) -> str:
        """The sorted set of a token key's attempts whose usage is not reported yet, by start."""
        return self._key("lim", "tr", key)

    def limit_turns(self, key: str) -> str:
        """The next turn (Redis microseconds) a rate key hands to a task that must wait."""
        return self._key("lim", "n", key)

    def limit_waiting(self, field: str) -> str:
        """The sorted set of tasks waiting for a limit (`field`: "c:", "r:" or "t:" + key)."""
        return self._key("lim", "w", field)

    def limit_keys(self) -> str:
        """The hash of limit keys in use: "c:<key>" -> limit, "r:<key>" -> "<N> <period ms>"."""
        return self._key("lim", "keys")

    # Statistics
    def running_counts(self) -> str:
        """The hash of running attempts per queue."""
        return self._key("stats", "running")

    def kind_counts(self, kind: str) -> str:
        """The hash of task counts per state for one kind (per tenant)."""
        return self._scoped("stats", "kind", kind)

    def run_times(self, kind: str) -> str:
        """The list of recent run times (ms) of one kind's successful attempts (per tenant)."""
        return self._scoped("rt", kind)
