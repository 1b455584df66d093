"""One pass of `bench.redis_cost` against one Redis, with whatever taskcast is importable.

Runs a no-op task's own scripts for `n` tasks, phase by phase, in pipelines of 100 (so the
round trips cost Redis little and the same for every variant): `submit` (with an idempotency key
and its fingerprint, as the Python client and the server send every submit), then, unmeasured,
Dramatiq's part of a fetch (LPOP the message id, SADD it to the consumer's ack set), `begin`
(which acks it) and `finish` (success). Prints one JSON line: per phase, Redis's CPU (its own
`INFO cpu`) and its commands (INFO commandstats), per task. Only APIs every taskcast has had
since `begin` acks (`calls.Ack`) are used, so the code before a change runs it too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import uuid
from collections.abc import Callable
from typing import Any

import redis

from taskcast.core import calls, scripts
from taskcast.core.layout import Layout

PIPE = 100


def _new(i: int, keyed: bool) -> calls.NewTask:
    # what client/_requests.py sends when the caller gives none (`keyed`), else no key at all
    key = f"auto-{uuid.uuid4().hex}" if keyed else ""
    return calls.NewTask(
        kind="bench.noop",
        queue="default",
        payload="{}",
        labels={},
        max_attempts=1,
        timeout_ms=600_000,
        not_before_ms=0,
        idempotency_key=key,
        fingerprint=hashlib.sha256(f"{key}{i}".encode()).hexdigest() if keyed else "",
    )


def _cpu_s(r: redis.Redis) -> float:
    """Redis's own CPU seconds (getrusage: finer than /proc's 10 ms ticks)."""
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _phase(r: redis.Redis, n: int, run: Callable[[], None]) -> dict[str, Any]:
    r.config_resetstat()
    before = _cpu_s(r)
    run()
    cpu = _cpu_s(r) - before
    stats = r.info("commandstats")
    commands = {
        k.removeprefix("cmdstat_"): {"calls": v["calls"] / n, "usec": v["usec"] / n}
        for k, v in stats.items()
        if k not in ("cmdstat_config|resetstat", "cmdstat_info")
    }
    return {"cpu_us": cpu / n * 1e6, "commands": commands}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("-n", type=int, default=20_000)
    p.add_argument("--no-key", action="store_true", help="submit without an idempotency key")
    args = p.parse_args()
    n, layout = args.n, Layout()
    r = redis.Redis(port=args.port)
    registered = scripts.register(r)
    ids = [uuid.uuid4().hex for _ in range(n)]
    news = [_new(i, not args.no_key) for i in range(n)]
    queue = layout.mq.queue("default")
    acks = layout.mq.acks("bench", "default")

    def many(build: Callable[[int], calls.Call]) -> None:
        for start in range(0, n, PIPE):
            with r.pipeline(transaction=False) as pipe:
                for i in range(start, min(n, start + PIPE)):
                    c = build(i)
                    s = registered[c.script]
                    pipe.evalsha(s.sha, len(c.keys), *c.keys, *c.args)
                for reply in pipe.execute():
                    assert not isinstance(reply, Exception), reply

    for script in registered.values():  # loaded before anything is measured
        r.script_load(script.script)

    def submit(i: int) -> calls.Call:
        return calls.submit(layout, ids[i], news[i])

    out = {"submit": _phase(r, n, lambda: many(submit))}
    with r.pipeline(transaction=False) as pipe:
        for _ in range(n):
            pipe.lpop(queue)
        rids = [x.decode() for x in pipe.execute()]
    r.sadd(acks, *rids)  # as Dramatiq's fetch does; `begin` acks
    ack = [calls.Ack(acks, "default", rid) for rid in rids]

    def begin(i: int) -> calls.Call:
        return calls.begin(layout, ids[i], 1, 60_000, f"token-{i}", ack=ack[i])

    out["begin"] = _phase(r, n, lambda: many(begin))
    done = calls.Outcome(calls.Status.OK, result="null")

    def finish(i: int) -> calls.Call:
        return calls.finish(
            layout, ids[i], 1, done, kind="bench.noop", queue="default", timeout_ms=600_000
        )

    out["finish"] = _phase(r, n, lambda: many(finish))
    out["memory"] = {"used_memory": r.info("memory")["used_memory"], "keys": r.dbsize()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
