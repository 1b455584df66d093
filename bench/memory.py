"""Redis memory per finished task, before and after compaction (issue 11).

For each kind, N tasks run to the end on a private stack (Redis, server, a worker whose
`TASKCAST_COMPACT_AFTER` outlasts the run); Redis's `used_memory` is read before the submits and
once every task has finished (full history); then a worker that compacts at once replaces it,
and `used_memory` is read again once every task is compacted (`fin` empty). Kinds:
`demo.sleep` (4 progress steps: 7 events) and `ai.chat` (a 48-token completion from the local
stand-in, streamed as output events), each with Redis's default `hash-max-listpack-value` (64)
and with 1024. Target: 1.5 KiB or less per compacted task.
"""

from __future__ import annotations

import asyncio
import shlex
from typing import Any

import redis

from bench import _procs, _report
from bench.llm import KEY_ENV, MESSAGES, WORKER_ENV
from taskcast.cli.redis_proc import free_port
from taskcast.client import AsyncTaskClient

KINDS: dict[str, Any] = {
    "demo.sleep": {"seconds": 0},
    "ai.chat": {"model": "standin", "messages": MESSAGES},
}


async def _submit_all(port: int, kind: str, payload: Any, n: int) -> None:
    async with AsyncTaskClient(f"127.0.0.1:{port}") as tc:
        left = iter(range(n))

        async def caller() -> None:
            for _ in left:
                handle = await tc.submit(kind, payload)
                await handle.wait(timeout=120)

        await asyncio.gather(*(caller() for _ in range(16)))


def run(kind: str, n: int, listpack_value: int) -> dict[str, Any]:
    with _procs.stack() as st:
        env: dict[str, str] = {}
        if kind == "ai.chat":
            port = free_port()
            cmd = f"{_procs.PY} -m taskcast.cli.llm_standin --port {port} --rate 0"
            standin = st.spawn("standin", shlex.split(cmd))
            st._await(standin, lambda: _procs.port_open(port), "LLM stand-in")
            env |= dict.fromkeys(WORKER_ENV, f"http://127.0.0.1:{port}/v1")
            env |= dict.fromkeys(KEY_ENV, "bench")
        r = st.redis()
        client = redis.Redis.from_url(r.url)
        if listpack_value:
            client.config_set("hash-max-listpack-value", listpack_value)
        compacting = {"TASKCAST_COMPACT_AFTER": "0", "TASKCAST_PRUNE_INTERVAL": "0.5", **env}

        def all_compacted() -> bool:
            return client.zcard(_procs.LAYOUT.finished()) == 0

        # Warm-up (scripts loaded, registries written), compacted, before the baseline...
        workers = st.workers(r.url, 1, 8, **compacting)
        _, tc_port = st.server(r.url)
        asyncio.run(_submit_all(tc_port, kind, KINDS[kind], 20))
        _procs.wait_for(all_compacted, 120, "warm-up compacted")
        workers.stop()
        # ...then a worker that keeps every event (a window longer than the run)...
        workers = st.workers(r.url, 1, 8, TASKCAST_COMPACT_AFTER="3600", **env)
        base = int(client.info("memory")["used_memory"])
        asyncio.run(_submit_all(tc_port, kind, KINDS[kind], n))
        full = int(client.info("memory")["used_memory"])
        workers.stop()
        # ...and one that compacts at once.
        st.workers(r.url, 1, 8, **compacting)
        _procs.wait_for(all_compacted, 120, "compaction")
        compacted = int(client.info("memory")["used_memory"])
        client.close()
    return {
        "tasks": n,
        "full_kib_per_task": (full - base) / n / 1024,
        "compacted_kib_per_task": (compacted - base) / n / 1024,
    }


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("--tasks", "-n", type=int, default=0)
    args = p.parse_args()
    n = args.tasks or (200 if args.quick else 2_000)
    # Redis's default keeps a hash compact (listpack) only while every value is <= 64 bytes;
    # a payload or result longer than that makes it a hashtable. Both settings are measured.
    res = {
        f"{kind}, hash-max-listpack-value {value or 64}": run(kind, n, value)
        for kind in KINDS
        for value in (0, 1024)
    }
    rows = [[k, v["full_kib_per_task"], v["compacted_kib_per_task"]] for k, v in res.items()]
    print(
        _report.table(
            f"Redis memory per finished task ({n} tasks, KiB)",
            ["kind, Redis setting", "full history", "compacted"],
            rows,
        )
    )
    worst = max(v["compacted_kib_per_task"] for v in res.values())
    print(f"target compacted <= 1.5 KiB: {worst:.2f} {_report.verdict(worst <= 1.5)}")
    _report.write("memory", args.quick, {"tasks": n, "results": res})


if __name__ == "__main__":
    main()
