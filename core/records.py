"""Plain records read back from Redis: a task and one of its events."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from taskcast.core.layout import DEFAULT_TENANT
from taskcast.core.limits import TaskLimits
from taskcast.core.scheduling import Scheduling
from taskcast.core.states import State


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _int(value: bytes | str | None) -> int:
    text = _text(value)
    return int(text) if text else 0


@dataclass(frozen=True)
class TaskError:
    """Why an attempt failed."""

    type: str
    message: str
    retryable: bool = False

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps({"type": self.type, "message": self.message, "retryable": self.retryable})

    @classmethod
    def from_json(cls, text: str) -> TaskError | None:
        """Parse the stored form; None for empty text."""
        if not text:
            return None
        data = json.loads(text)
        return cls(data.get("type", ""), data.get("message", ""), bool(data.get("retryable")))


@dataclass(frozen=True)
class TaskRecord:
    """One task as stored (times in ms since the epoch, 0 for unset)."""

    id: str
    kind: str
    queue: str
    state: State
    payload: str
    labels: dict[str, str]
    attempt: int
    max_attempts: int
    created: int
    updated: int
    started: int
    finished: int
    not_before: int
    timeout_ms: int
    result: str
    error: TaskError | None
    last_sequence: int
    idempotency_key: str
    cancel_requested: bool
    progress_fraction: float | None
    progress_message: str
    time_to_first_output_ms: int | None
    progress_attempt: int = 0  # the attempt that reported the progress
    limits: TaskLimits = field(default_factory=TaskLimits)  # the per-key limits it runs under
    waiting_for: str = ""  # "c:<key>", "r:<key>" or "t:<key>" while held back by a limit
    # The token budget (tokens, period ms) that held it back last: the worker's, not stored at
    # submit (core/limits.py Tokens).
    token_budget: tuple[int, int] = (0, 0)
    tenant: str = DEFAULT_TENANT  # whose task it is (stored only for other tenants)
    scheduling: Scheduling = field(default_factory=Scheduling)  # priority and fair share

    @classmethod
    def from_hash(cls, h: dict[Any, Any]) -> TaskRecord:
        """Build from HGETALL output (bytes or str keys)."""
        f = {_text(k): _text(v) for k, v in h.items()}
        return cls(
            id=f["id"],
            kind=f["kind"],
            queue=f["queue"],
            state=State(f["state"]),
            payload=f["payload"],
            labels=json.loads(f.get("labels") or "{}"),
            attempt=_int(f.get("attempt")),
            max_attempts=_int(f.get("max_attempts")),
            created=_int(f.get("created")),
            updated=_int(f.get("updated")),
            started=_int(f.get("started")),
            finished=_int(f.get("finished")),
            not_before=_int(f.get("not_before")),
            timeout_ms=_int(f.get("timeout_ms")),
            result=f.get("result", ""),
            error=TaskError.from_json(f.get("error", "")),
            last_sequence=_int(f.get("seq")),
            idempotency_key=f.get("idem", ""),
            cancel_requested=f.get("cancel") == "1",
            progress_fraction=float(f["pfrac"]) if f.get("pfrac") else None,
            progress_message=f.get("pmsg", ""),
            time_to_first_output_ms=int(f["ttfo"]) if f.get("ttfo") else None,
            progress_attempt=_int(f.get("patt")),
            limits=TaskLimits(
                f.get("ckey", ""),
                _int(f.get("climit")),
                f.get("rkey", ""),
                _int(f.get("rcount")),
                _int(f.get("rperiod")),
            ),
            waiting_for=f.get("wait", ""),
            token_budget=(_int(f.get("tok_limit")), _int(f.get("tok_period"))),
            tenant=f.get("tenant") or DEFAULT_TENANT,
            scheduling=Scheduling.from_field(f.get("fair", "")),
        )


@dataclass(frozen=True)
class EventRecord:
    """One stored event: its sequence and its flat fields (`type`, `ts`, and per type)."""

    task_id: str
    sequence: int
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def type(self) -> str:
        """state, progress, output, reset or waiting."""
        return self.fields.get("type", "")

    @property
    def terminal(self) -> bool:
        """Whether this event ends the task."""
        return self.type == "state" and State(self.fields["state"]).terminal

    @classmethod
    def from_stream(cls, task_id: str, entry_id: bytes | str, raw: dict[Any, Any]) -> EventRecord:
        """Build from one XRANGE entry."""
        seq = int(_text(entry_id).split("-", 1)[0])
        return cls(task_id, seq, {_text(k): _text(v) for k, v in raw.items()})

    @classmethod
    def from_live(cls, task_id: str, rest: bytes) -> EventRecord:
        """Build from a live-channel message `<task id> <sequence> <[k, v, k, v ...] as JSON>`,
        whose id the caller has split off already (see `live_task_id`)."""
        seq, _, flat_json = rest.partition(b" ")
        flat = json.loads(flat_json)
        return cls(task_id, int(seq), dict(zip(flat[::2], flat[1::2], strict=True)))


def live_task_id(data: bytes) -> tuple[str, bytes]:
    """Split a live-channel message into its task id and the rest, without decoding the rest."""
    task_id, _, rest = data.partition(b" ")
    return task_id.decode(), rest
