"""LLM streaming overhead: time to first token and total time of an `ai.chat` task through
taskcast, against calling the same local OpenAI-compatible stand-in directly with `openai`.

Needs `taskcast.worker.kinds.ai` (the `ai.chat` kind) and `taskcast.cli.llm_standin` (the local
server); until both exist it says so and skips. Target: first-token overhead under 20 ms p50.

Assumptions about interfaces that were being built when this was written (adjust here if they
differ): the stand-in starts as `python -m taskcast.cli.llm_standin --port PORT` (override with
BENCH_LLM_STANDIN_CMD, `{port}` substituted); the worker finds it through one of the environment
variables in WORKER_ENV; the payload takes `messages`, `model` and `max_tokens`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shlex
import time
from typing import Any

from bench import _procs, _report
from taskcast.cli.redis_proc import free_port

WORKER_ENV = (
    "TASKCAST_AI_BASE_URL",
    "TASKCAST_LLM_BASE_URL",
    "TASKCAST_OPENAI_BASE_URL",
    "OPENAI_BASE_URL",
)
KEY_ENV = ("TASKCAST_AI_API_KEY", "TASKCAST_LLM_API_KEY", "OPENAI_API_KEY")
MESSAGES: Any = [{"role": "user", "content": "Write three sentences about queues."}]


def missing() -> str | None:
    """Why the benchmark cannot run yet, or None."""
    for module in ("taskcast.worker.kinds.ai", "taskcast.cli.llm_standin"):
        if importlib.util.find_spec(module) is None:
            return f"{module} does not exist yet"
    return None


async def through_taskcast(port: int, model: str, n: int) -> list[tuple[float, float]]:
    from taskcast.client import AsyncTaskClient

    out = []
    async with AsyncTaskClient(f"127.0.0.1:{port}") as tc:
        for _ in range(n):
            t0 = time.perf_counter()
            handle = await tc.submit(
                "ai.chat", {"messages": MESSAGES, "model": model, "max_tokens": 64}
            )
            first = None
            async for event in handle.watch():
                if event.type == "output" and first is None:
                    first = time.perf_counter() - t0
                if event.type == "state" and event.terminal:
                    break
            out.append((first if first is not None else float("nan"), time.perf_counter() - t0))
    return out


async def direct(base_url: str, model: str, n: int) -> list[tuple[float, float]]:
    from openai import AsyncOpenAI

    out = []
    async with AsyncOpenAI(base_url=base_url, api_key="bench") as ai:
        for _ in range(n):
            t0 = time.perf_counter()
            first = None
            stream = await ai.chat.completions.create(
                model=model,
                messages=MESSAGES,
                max_tokens=64,
                stream=True,
            )
            async for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - t0
            out.append((first if first is not None else float("nan"), time.perf_counter() - t0))
    return out


def run(n: int, model: str) -> dict[str, Any]:
    with _procs.stack() as st:
        port = free_port()
        cmd = os.environ.get(
            "BENCH_LLM_STANDIN_CMD", f"{_procs.PY} -m taskcast.cli.llm_standin --port {{port}}"
        )
        standin = st.spawn("standin", shlex.split(cmd.format(port=port)))
        st._await(standin, lambda: _procs.port_open(port), "LLM stand-in")
        base_url = f"http://127.0.0.1:{port}/v1"
        r = st.redis()
        env = dict.fromkeys(WORKER_ENV, base_url) | dict.fromkeys(KEY_ENV, "bench")
        st.workers(r.url, 1, 8, **env)
        _, tc_port = st.server(r.url)
        asyncio.run(direct(base_url, model, 2))  # warm-up
        asyncio.run(through_taskcast(tc_port, model, 2))
        tc, dr = [], []
        for _ in range(n):  # interleaved, so drift hits both alike
            dr += asyncio.run(direct(base_url, model, 1))
            tc += asyncio.run(through_taskcast(tc_port, model, 1))
    return {"taskcast": tc, "direct": dr}


def main() -> None:
    p = _report.parser(__doc__ or "")
    p.add_argument("--model", default="standin")
    args = p.parse_args()
    why = missing()
    if why:
        print(f"llm: SKIPPED: {why} (ai.chat and the local stand-in are being built; see issue 3)")
        _report.write("llm", args.quick, {"skipped": why})
        return
    n = 10 if args.quick else 50
    res = run(n, args.model)
    rows, out = [], {}
    for name, pairs in res.items():
        ttft = _report.summary_ms([a for a, _ in pairs])
        total = _report.summary_ms([b for _, b in pairs])
        out[name] = {"ttft": ttft, "total": total, "pairs_s": pairs}
        rows.append([name, ttft["p50_ms"], ttft["p99_ms"], total["p50_ms"], total["p99_ms"]])
    overhead = out["taskcast"]["ttft"]["p50_ms"] - out["direct"]["ttft"]["p50_ms"]
    targets = {"ttft_overhead_p50_ms": {"value": overhead, "target": "< 20", "met": overhead < 20}}
    print(
        _report.table(
            "LLM streaming, ms", ["path", "TTFT p50", "TTFT p99", "total p50", "total p99"], rows
        )
    )
    print(
        f"target first-token overhead p50: {overhead:.1f} ms (< 20) "
        f"{_report.verdict(overhead < 20)}"
    )
    _report.write("llm", args.quick, {"runs": out, "targets": targets, "model": args.model})


if __name__ == "__main__":
    main()
