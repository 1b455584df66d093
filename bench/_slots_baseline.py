"""The baseline of `bench.slots`: one plain asyncio process making N slow calls at once.

    python -m bench._slots_baseline ai URL N      # N streamed completions with `openai`
    python -m bench._slots_baseline http URL N    # N GETs with one `httpx.AsyncClient`

After a warm-up call (imports, first connection), it starts all N at once and prints one JSON
line: makespan (s), CPU seconds of this process over the N calls, peak RSS (KiB), failures.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

MESSAGES: Any = [{"role": "user", "content": "Write three sentences about queues."}]


def peak_rss_kib() -> int:
    """This process's peak RSS since it started (VmHWM; `ru_maxrss` would carry the peak of the
    process that forked it, which Linux keeps across exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


async def measure(n: int, call: Callable[[], Awaitable[object]]) -> dict[str, Any]:
    """Warm up with one call, then run `n` at once; time, CPU and failures."""
    await call()
    cpu0, t0 = time.process_time(), time.time()
    results = await asyncio.gather(*(call() for _ in range(n)), return_exceptions=True)
    makespan, cpu = time.time() - t0, time.process_time() - cpu0
    failed = [repr(r) for r in results if isinstance(r, BaseException)]
    return {
        "n": n,
        "makespan_s": makespan,
        "cpu_s": cpu,
        "peak_rss_kib": peak_rss_kib(),
        "failed": len(failed),
        "first_failures": failed[:3],
    }


async def ai(url: str, n: int) -> dict[str, Any]:
    """N streamed chat completions from one `AsyncOpenAI` client (its pool allows 1,000)."""
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=url, api_key="bench", max_retries=0, timeout=120) as client:

        async def call() -> str:
            stream = await client.chat.completions.create(
                model="standin", messages=MESSAGES, stream=True
            )
            parts = []
            async with stream:
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        parts.append(chunk.choices[0].delta.content)
            return "".join(parts)

        return await measure(n, call)


async def http(url: str, n: int) -> dict[str, Any]:
    """N GETs through one `httpx.AsyncClient` whose pool allows all N at once (its default,
    100 connections, would queue the rest: not what a worker's client per task does)."""
    import httpx

    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def call() -> bytes:
            reply = await client.get(url)
            reply.raise_for_status()
            return reply.content

        return await measure(n, call)


def main() -> None:
    kind, url, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    out = asyncio.run(ai(url, n) if kind == "ai" else http(url, n))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
