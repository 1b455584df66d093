"""How the command prints tasks, events and stats (rich on a terminal, JSON on request)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from taskcast.client import Event, Kind, Stats, Task

console = Console(highlight=False)
STATE_STYLE = {
    "PENDING": "cyan",
    "RUNNING": "blue",
    "RETRYING": "yellow",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
}


def task_dict(t: Task) -> dict[str, Any]:
    """A JSON-friendly view of a task."""
    return {
        "id": t.id,
        "kind": t.kind,
        "state": t.state.value,
        "queue": t.queue,
        "tenant": t.tenant,
        "priority": t.priority,
        "fairness_key": t.fairness_key,
        "attempt": t.attempt,
        "max_attempts": t.max_attempts,
        "labels": t.labels,
        "payload": t.payload,
        "result": t.result,
        "error": t.error and {"type": t.error.type, "message": t.error.message},
        "progress": t.progress,
        "created_at": t.created_at and t.created_at.isoformat(),
        "finished_at": t.finished_at and t.finished_at.isoformat(),
        **({"limits": t.limits, "waiting_for": t.waiting_for} if t.limits or t.waiting_for else {}),
    }


def _brief(text: str, limit: int = 300) -> str:
    """At most `limit` characters: a streamed answer was already printed token by token."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def event_line(e: Event) -> str | None:
    """One line of rich markup for an event (None for output, which prints inline)."""
    seq = f"[dim]#{e.sequence:<3}[/]"
    if e.type == "state" and e.state is not None:
        style = STATE_STYLE.get(e.state.value, "")
        line = f"{seq} [{style}]{e.state.value}[/]"
        if e.state.value in ("RUNNING", "RETRYING") or e.attempt > 1:
            line += f" attempt {e.attempt}"
        if e.error:
            line += f" [red]{escape(e.error.type)}: {escape(e.error.message)}[/]"
        if e.next_attempt_at:
            line += f" next at {e.next_attempt_at.strftime('%H:%M:%S.%f')[:-3]}"
        if e.result is not None:
            line += f" result {escape(_brief(json.dumps(e.result)))}"
        if e.message:  # a cancel's reason: the caller's text, never markup
            line += f" ({escape(e.message)})"
        return line
    if e.type == "progress":
        return f"{seq} progress {e.progress or 0:.0%} {escape(e.message)}"
    if e.type == "output_reset":
        return f"{seq} [yellow]output of attempt {e.attempt} discarded[/]"
    if e.type == "events_trimmed":
        return f"[yellow]events before #{e.first_available_sequence} were trimmed[/]"
    if e.type == "waiting":
        return f"{seq} [yellow]waiting for {limit_text(e.reason, e.key, e.limit, e.period)}[/]"
    return None


def limit_text(reason: str, key: str, limit: int, period: float | None) -> str:
    """ "rate limit 'acme' (20/s)", "concurrency limit 'acme' (3 at once)", "token budget
    'gpt-4o' (90000/min)"."""
    if reason in ("rate", "tokens"):
        unit = "s" if period == 1 else "min" if period == 60 else f"{period:g}s"
        what = "rate limit" if reason == "rate" else "token budget"
        return f"{what} {escape(repr(key))} ({limit}/{unit})"
    return f"{reason} limit {escape(repr(key))} ({limit} at once)"


def print_event(e: Event, *, as_json: bool, in_output: bool) -> bool:
    """Print one event; returns whether the cursor is now mid-output (after inline text)."""
    if as_json:
        # One object per line (JSON Lines), so `| jq -c` or a line reader takes each event as
        # it comes; print_json spread each one over many lines.
        console.out(e.to_json(), highlight=False)
        return False
    if e.type == "output":
        console.out(e.text, end="", highlight=False)
        return not e.text.endswith("\n")
    line = event_line(e)
    if line is not None:
        if in_output:
            console.out("")
        console.print(line, soft_wrap=True)  # one line per event, also when piped (80 columns)
    return False


def tasks_table(tasks: list[Task]) -> Table:
    """`taskcast ls`."""
    table = Table("id", "kind", "state", "attempt", "created", "labels")
    for t in tasks:
        created = t.created_at.strftime("%Y-%m-%d %H:%M:%S") if t.created_at else ""
        labels = escape(",".join(f"{k}={v}" for k, v in t.labels.items()))  # any text
        table.add_row(
            t.id,
            t.kind,
            f"[{STATE_STYLE.get(t.state.value, '')}]{t.state.value}[/]",
            f"{t.attempt}/{t.max_attempts}",
            created,
            labels,
        )
    return table


def stats_dict(s: Stats) -> dict[str, Any]:
    """A JSON-friendly view of the stats (`taskcast stats -o json`)."""
    return {
        "tenant": s.tenant,
        "watch_streams_open": s.watch_streams_open,
        "queues": [dataclasses.asdict(q) for q in s.queues],
        "kinds": [
            {
                "kind": k.kind,
                "counts": {state.value: n for state, n in k.counts.items()},
                "run_time_p50": k.run_time_p50,
                "run_time_p90": k.run_time_p90,
                "run_time_p99": k.run_time_p99,
                "run_time_samples": k.run_time_samples,
            }
            for k in s.kinds
        ],
        "workers": [
            {**dataclasses.asdict(w), "last_seen": w.last_seen and w.last_seen.isoformat()}
            for w in s.workers
        ],
        "limits": [dataclasses.asdict(x) for x in s.limits],
    }


def limits_table(s: Stats) -> Table:
    """`taskcast stats`: the per-key limits in use."""
    # rate: "running" counts the starts within the last period
    table = Table("limit", "key", "max", "running", "waiting", title="limits")
    for x in s.limits:
        unit = "" if x.period is None else "/s" if x.period == 1 else "/min"
        table.add_row(x.reason, escape(x.key), f"{x.limit}{unit}", str(x.running), str(x.waiting))
    return table


def kind_dict(k: Kind) -> dict[str, Any]:
    """A JSON-friendly view of a kind (`taskcast kinds -o json`)."""
    return {
        "name": k.name,
        "queue": k.queue,
        "max_attempts": k.max_attempts,
        "timeout": k.timeout,
        "served": k.served,
        "last_seen": k.last_seen and k.last_seen.isoformat(),
        "schema": k.schema,
    }


def kinds_table(kinds: list[Kind]) -> Table:
    """`taskcast kinds`: the payload column lists the schema's fields, required ones marked *."""
    table = Table("kind", "queue", "attempts", "timeout", "served", "payload fields")
    for k in kinds:
        table.add_row(
            k.name,
            k.queue,
            str(k.max_attempts),
            f"{k.timeout:g} s",
            "[green]yes[/]" if k.served else "[red]no[/]",
            escape(_fields(k.schema)),
        )
    return table


def _fields(schema: dict[str, Any] | None) -> str:
    if schema is None:
        return "any JSON object"
    required = set(schema.get("required", []))
    names = [f"{n}*" if n in required else n for n in schema.get("properties", {})]
    return ", ".join(names) or "{}"


def stats_tables(s: Stats) -> tuple[Table, Table]:
    """`taskcast stats`."""
    queues = Table(
        "queue",
        "depth",
        "running",
        "delayed",
        "dead",
        "workers",
        "slots used/all",
        "threads busy/all",
        title="queues",
    )
    for q in s.queues:
        queues.add_row(
            q.name,
            str(q.depth),
            str(q.running),
            str(q.delayed),
            str(q.dead),
            str(q.workers),
            f"{q.slots_used}/{q.slots}",
            f"{q.threads_busy}/{q.threads}",
        )
    kinds = Table(
        "kind",
        "pending",
        "running",
        "retrying",
        "succeeded",
        "failed",
        "cancelled",
        "p50",
        "p90",
        "p99",
        title=f"kinds (tasks of tenant {s.tenant})",
    )
    for k in s.kinds:
        ms = [
            f"{v * 1000:.0f} ms" if v is not None else "-"
            for v in (k.run_time_p50, k.run_time_p90, k.run_time_p99)
        ]
        kinds.add_row(k.kind, *(str(n) for n in k.counts.values()), *ms)
    return queues, kinds
