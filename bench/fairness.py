"""Priorities and fair share: what they cost end to end, and how long a tenant waits behind
another tenant's flood.

1. Cost. The e2e no-op run (bench/_e2e.py) in four variants, interleaved round after round as
   bench.limits does (each round starts with the next variant; every variant runs its committed
   code from an extracted tree): `base`, the tree before priorities (`e1be3c1`, `--base`);
   `head`, HEAD with no priority and no tenants (every message on Dramatiq's own list, as
   before: target within 5% of base in CPU per task and tasks/s); `head, priority 2`, every task
   submitted with priority 2, so every message goes through the buckets of `_fetch.lua`;
   `head, fairness keys`, every task with one of 16 fairness keys (round-robin among 16 lists).
2. Flood. A server with a tenants file (tenants A and B, weight 1 each) and one default worker
   process (`taskcast worker`: 1 process x 8 threads). A submits 5,000 tasks through
   SubmitTasks; 0.5 s after that call returns, B submits 20 tasks one at a time, one every
   50 ms. The tasks are `bench.sleep` of 20 ms (`--task-ms`), so a backlog builds (about 300
   starts/s against about 1,500 submits/s), and `bench.noop`, which one worker drains about as
   fast as SubmitTasks fills the queue, so hardly any backlog is left when B comes. Measured
   from the tasks themselves (`started_at - created_at`): B's queue wait, A's, and how many of
   A's tasks were still waiting when B's last one started. The baseline, in the same run: the
   same 20 submitted with A's token (one tenant, so FIFO behind A's backlog). Each run does
   both, the order alternating run by run.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench import _procs, _report
from bench.limits import against_base, interleaved, tree
from taskcast.client import TaskClient, TaskHandle, TaskSpec

BASE = "e1be3c1"  # the parent of the commit that brought priorities and fair share
KEYS = 16
FLOOD, TRICKLE = 5_000, 20
PAUSE_S, EVERY_S = 0.5, 0.05
TOKENS = {"a": "bench-token-a", "b": "bench-token-b"}
TIMEOUT = 600.0


def _priority_2(i: int) -> dict[str, Any]:
    return {"priority": 2}


def _fairness_key(i: int) -> dict[str, Any]:
    return {"fairness_key": f"key-{i % KEYS}"}


def cost(
    n: int, rounds: int, processes: int, threads: int, base_path: str, head_path: str
) -> dict[str, Any]:
    """The four e2e variants, interleaved."""
    head = {"PYTHONPATH": head_path}
    return interleaved(
        {
            "base": {"env": {"PYTHONPATH": base_path}},
            "head": {"env": head},
            "head, priority 2": {"env": head, "options": _priority_2},
            "head, fairness keys": {"env": head, "options": _fairness_key},
        },
        n,
        rounds,
        processes,
        threads,
    )


def _times(handles: list[TaskHandle]) -> list[tuple[float, float]]:
    """Each task's (created_at, started_at), epoch seconds."""
    out = []
    for h in handles:
        t = h.get()
        assert t.created_at is not None and t.started_at is not None, t
        out.append((t.created_at.timestamp(), t.started_at.timestamp()))
    return out


def _waits_s(times: list[tuple[float, float]]) -> list[float]:
    return [started - created for created, started in times]


def flood(fair: bool, ms: int) -> dict[str, Any]:
    """A's 5,000 then B's 20; B with its own token when `fair`, else with A's. Each task holds
    its thread `ms` milliseconds (`bench.sleep`), or is `bench.noop` with 0."""
    kind, payload = ("bench.sleep", {"ms": ms}) if ms else ("bench.noop", {})
    with _procs.stack() as st:
        tenants = st.tmp / "tenants.toml"
        tenants.write_text(
            "".join(f'[tenants.{t}]\ntokens = ["{tok}"]\nweight = 1\n' for t, tok in TOKENS.items())
        )
        r = st.redis()
        st.workers(r.url, 1, 8)  # `taskcast worker`'s defaults
        _, port = st.server(r.url, env={"TASKCAST_TENANTS_FILE": str(tenants)})
        addr = f"127.0.0.1:{port}"
        counts = redis.Redis.from_url(r.url)
        a_done = _procs.LAYOUT.of("a").kind_counts(kind)
        with (
            TaskClient(addr, token=TOKENS["a"]) as a,
            TaskClient(addr, token=TOKENS["b" if fair else "a"]) as b,
        ):
            for h in [a.submit(kind, payload) for _ in range(50)]:  # warm-up
                h.wait(timeout=60)
            t0 = time.monotonic()
            flooded = a.submit_many([TaskSpec(kind, payload)] * FLOOD)
            a_handles = [h for h in flooded if isinstance(h, TaskHandle)]
            assert len(a_handles) == FLOOD, [h for h in flooded if not isinstance(h, TaskHandle)]
            flood_s = time.monotonic() - t0
            start = time.monotonic() + PAUSE_S
            b_handles = []
            for i in range(TRICKLE):
                time.sleep(max(0.0, start + i * EVERY_S - time.monotonic()))  # the pacing itself
                b_handles.append(b.submit(kind, payload))
            for h in b_handles:
                h.wait(timeout=TIMEOUT)
            target = 50 + FLOOD + (0 if fair else TRICKLE)
            _procs.wait_for(
                lambda: int(counts.hget(a_done, "SUCCEEDED") or 0) >= target, TIMEOUT, "A's flood"
            )
            a_times, b_times = _times(a_handles), _times(b_handles)
        counts.close()
    b_last = max(started for _, started in b_times)
    first_created = min(created for created, _ in a_times)
    drain_s = max(started for _, started in a_times) - first_created
    b_waits, a_waits = _waits_s(b_times), _waits_s(a_times)
    return {
        "fair": fair,
        "task_ms": ms,
        "flood_submit_s": flood_s,
        "drain_s": drain_s,
        "b_wait_s": {
            "p50": _report.pct(b_waits, 0.5),
            "p95": _report.pct(b_waits, 0.95),
            "max": max(b_waits),
            "all": sorted(b_waits),
        },
        "a_wait_s": {"p50": _report.pct(a_waits, 0.5), "max": max(a_waits)},
        "a_waiting_at_b_last_start": sum(1 for _, started in a_times if started > b_last),
        "b_last_start_after_flood_s": b_last - first_created,
        "b_p95_vs_drain": _report.pct(b_waits, 0.95) / drain_s,
        "b_max_vs_drain": max(b_waits) / drain_s,
    }


def floods(runs: int, task_ms: list[int]) -> list[dict[str, Any]]:
    """`runs` pairs of the flood per task length, fair share and FIFO, the order alternating."""
    out = []
    for r in range(runs):
        for fair, ms in [(f, ms) for ms in task_ms for f in (r % 2 == 0, r % 2 == 1)]:
            res = flood(fair, ms)
            out.append(res)
            b, a = res["b_wait_s"], res["a_wait_s"]
            print(
                f"  run {r + 1} {ms:3} ms {'fair share' if fair else 'FIFO (A token)':15} "
                f"B wait p50 {b['p50']:.3f} p95 {b['p95']:.3f} max {b['max']:.3f} s; "
                f"A p50 {a['p50']:.3f} max {a['max']:.3f} s; drain {res['drain_s']:.2f} s; "
                f"A waiting at B's last start {res['a_waiting_at_b_last_start']}"
            )
    return out


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("--processes", "-p", type=int, default=2)
    p.add_argument("--threads", "-t", type=int, default=8)
    p.add_argument("--tasks", "-n", type=int, default=0, help="tasks per e2e run")
    p.add_argument("--rounds", type=int, default=0, help="e2e rounds (4 variants each)")
    p.add_argument("--runs", type=int, default=0, help="flood runs (fair share and FIFO each)")
    p.add_argument("--base", default=BASE, help="the commit the cost is measured against")
    p.add_argument("--skip-cost", action="store_true", help="the flood only")
    p.add_argument(
        "--task-ms",
        type=int,
        nargs="+",
        default=[20, 0],
        help="flood tasks' length in ms (0: bench.noop, no backlog builds on one worker)",
    )
    args = p.parse_args()
    n = args.tasks or (1_500 if args.quick else 10_000)
    rounds = args.rounds or (1 if args.quick else 4)
    runs = args.runs or (1 if args.quick else 2)
    costs: dict[str, Any] = {}
    if not args.skip_cost:
        with tempfile.TemporaryDirectory() as tmp:
            base_path = tree(Path(tmp) / "base", args.base)
            head_path = tree(Path(tmp) / "head", "HEAD")
            print(f"cost: {n} no-op tasks x {rounds} rounds, {args.processes} x {args.threads}")
            print(f"  base = {args.base}, against HEAD (committed code)")
            costs = cost(n, rounds, args.processes, args.threads, base_path, head_path)
    print(f"flood: A {FLOOD:,} in one submit_many, B {TRICKLE} one per {EVERY_S * 1000:.0f} ms")
    flooded = floods(runs, args.task_ms)
    targets: dict[str, dict[str, Any]] = {}
    if costs:
        title = "e2e with and without priorities (medians; x = ratio to base)"
        targets |= against_base(costs, title, "head")
    fair = [f for f in flooded if f["fair"] and f["task_ms"]]
    if fair:
        ratio = max(f["b_max_vs_drain"] for f in fair)
        targets["fair_b_max_wait_vs_drain"] = {
            "value": ratio,
            "target": "< 0.1",
            "met": ratio < 0.1,
        }
    print()
    rows = [
        [
            "fair share" if f["fair"] else "FIFO",
            f["task_ms"],
            f["b_wait_s"]["p50"],
            f["b_wait_s"]["p95"],
            f["b_wait_s"]["max"],
            f["a_wait_s"]["p50"],
            f["a_wait_s"]["max"],
            f["drain_s"],
            f["b_max_vs_drain"],
            f["a_waiting_at_b_last_start"],
        ]
        for f in flooded
    ]
    print(
        _report.table(
            "flood: queue waits in s (started_at - created_at)",
            [
                "B via",
                "ms",
                "B p50",
                "B p95",
                "B max",
                "A p50",
                "A max",
                "drain",
                "B/drain",
                "A left",
            ],
            rows,
        )
    )
    for k, v in targets.items():
        print(f"target {k}: {v['value']:.3f} ({v['target']}) {_report.verdict(v['met'])}")
    _report.write(
        "fairness",
        args.quick,
        {
            "base_commit": args.base,
            "cost": costs,
            "flood": flooded,
            "targets": targets,
            "env": {k: v for k, v in os.environ.items() if k.startswith("TASKCAST_")},
        },
    )


if __name__ == "__main__":
    main()
