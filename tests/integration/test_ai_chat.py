"""`ai.chat` in a real worker process against the real stand-in model server (HTTP and SSE)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from taskcast.cli.llm_standin import StandIn, Step, reply_text
from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import Event, InvalidArgumentError, TaskClient, TaskFailedError, TaskState
from taskcast.core.layout import Layout
from tests.support import ROOT, WorkerProcess, eventually

KEY = f"sk-taskcast-test-{uuid.uuid4().hex}"
TOKENS = 40
pytestmark = pytest.mark.usefixtures("ai_worker")


class LoggedWorker(WorkerProcess):
    """A worker whose output goes to a file, so a test can read what it logged."""

    def __init__(self, *args: Any, log_path: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_path = log_path

    def start(self) -> LoggedWorker:
        client = redis.Redis.from_url(self.redis_url)
        key = Layout(self.prefix).kinds()
        client.delete(key)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, env=self.env, cwd=ROOT, start_new_session=True, stdout=log, stderr=log
            )
        eventually(lambda: client.hexists(key, "ai.chat") or self._died(), 30, "worker boot")
        client.close()
        return self


@pytest.fixture(scope="module")
def llm() -> Iterator[StandIn]:
    """The stand-in model server: 200 tokens/s, 40-word answers unless a step says otherwise."""
    with StandIn(rate=200, tokens=TOKENS) as server:
        yield server


@pytest.fixture(scope="module")
def worker_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the module's worker writes its logs."""
    return tmp_path_factory.mktemp("ai-worker") / "worker.log"


@pytest.fixture(scope="module")
def ai_worker(
    redis_server: RedisProcess, prefix: str, llm: StandIn, worker_log: Path
) -> Iterator[WorkerProcess]:
    """A real worker configured for the stand-in, with an API key to keep secret."""
    env = {
        "TASKCAST_AI_BASE_URL": llm.url,
        "TASKCAST_AI_API_KEY": KEY,
        "TASKCAST_AI_REQUEST_TIMEOUT": "30",
    }
    proc = LoggedWorker(redis_server.url, prefix, log_path=worker_log, extra_env=env).start()
    yield proc
    proc.stop()


def outputs(events: list[Event], attempt: int | None = None) -> list[Event]:
    return [e for e in events if e.type == "output" and attempt in (None, e.attempt)]


def states(events: list[Event]) -> list[tuple[str, int]]:
    return [(e.state.value, e.attempt) for e in events if e.type == "state" and e.state]


def test_tokens_arrive_in_order_and_complete(client: TaskClient, llm: StandIn) -> None:
    handle = client.submit("ai.chat", {"prompt": "Tell me about queues", "model": "plain"})
    events = list(handle.watch())
    text = reply_text("Tell me about queues", TOKENS)
    assert states(events) == [("PENDING", 0), ("RUNNING", 1), ("SUCCEEDED", 1)]
    out = outputs(events)
    assert "".join(e.text for e in out) == text
    assert out[0].text == "You"  # the first token is written alone, before any coalescing
    assert events[-1].result == {
        "text": text,
        "finish_reason": "stop",
        "model": "plain",
        "usage": {"prompt_tokens": 4, "completion_tokens": TOKENS, "total_tokens": 4 + TOKENS},
    }
    assert handle.get().raw.HasField("time_to_first_output")
    [sent] = llm.records("plain")
    assert sent.api_key == KEY and sent.body["stream"] is True and sent.outcome == "completed"


def test_messages_system_and_allowed_parameters_pass_through(
    client: TaskClient, llm: StandIn
) -> None:
    payload = {
        "model": "params",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "first"}, {"role": "user", "content": "second"}],
        "temperature": 0.2,
        "max_tokens": 5,
        "top_p": 0.5,
        "seed": 7,
    }
    result = client.submit("ai.chat", payload).wait(timeout=30)
    assert result["text"] == reply_text("second", 5) and result["finish_reason"] == "length"
    body = llm.records("params")[-1].body
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert [m["content"] for m in body["messages"][1:]] == ["first", "second"]
    assert (body["temperature"], body["max_tokens"], body["top_p"], body["seed"]) == (
        0.2,
        5,
        0.5,
        7,
    )


def test_unsupported_parameters_fail_without_calling_the_model(
    client: TaskClient, llm: StandIn
) -> None:
    # Refused at submit since the kind registers its schema (issue 14), nothing queued.
    with pytest.raises(InvalidArgumentError) as info:
        client.submit("ai.chat", {"prompt": "x", "model": "bad-params", "tools": []})
    assert "payload_json.tools" in dict(info.value.violations)
    assert llm.records("bad-params") == []


def test_coalescing_keeps_events_well_below_one_per_token(client: TaskClient, llm: StandIn) -> None:
    llm.script("fast", Step(rate=0, tokens=600))
    events = list(client.submit("ai.chat", {"prompt": "go", "model": "fast"}).watch())
    out = outputs(events)
    assert "".join(e.text for e in out) == reply_text("go", 600)
    assert out[0].text == "You"
    assert len(out) <= 600 // 10, f"{len(out)} output events for 600 tokens"


def test_429_then_success_honours_retry_after(client: TaskClient, llm: StandIn) -> None:
    llm.script("busy", Step("rate_limit", retry_after=2), Step())
    handle = client.submit("ai.chat", {"prompt": "hi", "model": "busy"})
    events = list(handle.watch())
    assert states(events) == [
        ("PENDING", 0),
        ("RUNNING", 1),
        ("RETRYING", 1),
        ("RUNNING", 2),
        ("SUCCEEDED", 2),
    ]
    retry = next(e for e in events if e.state is TaskState.RETRYING)
    running = [e for e in events if e.state is TaskState.RUNNING][1]
    assert retry.error is not None and retry.error.type == "UpstreamUnavailableError"
    assert "HTTP 429" in retry.error.message and "retry after 2s" in retry.error.message
    assert retry.time and retry.next_attempt_at and running.time
    # The schedule asks for at least the server's 2 s (the worker's own backoff is 0.05-0.2 s).
    assert (retry.next_attempt_at - retry.time).total_seconds() >= 1.9
    assert running.time >= retry.next_attempt_at
    assert [r.outcome for r in llm.records("busy")] == ["rate_limited", "completed"]


def test_server_error_is_retried(client: TaskClient, llm: StandIn) -> None:
    llm.script("flaky", Step("error", status=503))
    handle = client.submit("ai.chat", {"prompt": "hi", "model": "flaky"})
    assert handle.wait(timeout=30)["text"] == reply_text("hi", TOKENS)
    assert handle.get().attempt == 2


@pytest.mark.parametrize(
    ("step", "says"),
    [
        (Step("unauthorized"), "HTTP 401 from http://127.0.0.1:"),
        (Step("error", status=404, message="no such model"), "the model 'gone' or the chat"),
        (Step("error", status=400, message="bad temperature"), "rejected the request"),
    ],
)
def test_client_errors_fail_at_once_naming_the_cause(
    client: TaskClient, llm: StandIn, step: Step, says: str
) -> None:
    model = "gone" if step.status == 404 else f"refused-{uuid.uuid4().hex[:6]}"
    llm.script(model, step)
    handle = client.submit("ai.chat", {"prompt": "hi", "model": model})
    with pytest.raises(TaskFailedError) as info:
        handle.wait(timeout=30)
    error = info.value.error
    assert error is not None and error.type == "UpstreamRejectedError" and not error.retryable
    assert says in error.message and KEY not in error.message
    if step.do == "unauthorized":
        assert "TASKCAST_AI_API_KEY" in error.message and "[redacted]" in error.message
    assert handle.get().attempt == 1 and len(llm.records(model)) == 1


def test_stream_dropped_midway_retries_after_a_reset(client: TaskClient, llm: StandIn) -> None:
    llm.script("dropping", Step("drop", after=5))
    handle = client.submit("ai.chat", {"prompt": "hi", "model": "dropping"})
    events = list(handle.watch())
    text = reply_text("hi", TOKENS)
    kinds = [(e.type, e.state.value if e.state else "", e.attempt) for e in events]
    retry = kinds.index(("state", "RETRYING", 1))
    assert kinds[retry + 1 : retry + 3] == [("output_reset", "", 1), ("state", "RUNNING", 2)]
    first = "".join(e.text for e in outputs(events, 1))
    assert first and text.startswith(first)  # some of the answer, then the cut
    assert "".join(e.text for e in outputs(events, 2)) == text
    error = events[retry].error
    assert error is not None and "connection" in error.message
    assert events[-1].result["text"] == text
    assert [r.outcome for r in llm.records("dropping")] == ["dropped", "completed"]


def test_malformed_chunk_is_retried(client: TaskClient, llm: StandIn) -> None:
    llm.script("garbled", Step("malformed", after=3))
    handle = client.submit("ai.chat", {"prompt": "hi", "model": "garbled"})
    assert handle.wait(timeout=30)["text"] == reply_text("hi", TOKENS)
    retry = next(e for e in handle.watch() if e.state is TaskState.RETRYING)
    assert retry.error is not None and "malformed chunk" in retry.error.message


def test_cancel_mid_stream_closes_the_upstream_request(client: TaskClient, llm: StandIn) -> None:
    llm.script("slow", Step(rate=5, tokens=1000))
    handle = client.submit("ai.chat", {"prompt": "take your time", "model": "slow"})
    watch = handle.watch()
    assert next(e for e in watch if e.type == "output").text == "You"
    handle.cancel("enough")
    assert [e.state for e in watch if e.terminal] == [TaskState.CANCELLED]
    kept = "".join(e.text for e in outputs(list(handle.watch())))
    assert reply_text("take your time", 1000).startswith(kept) and kept
    record = eventually(
        lambda: next((r for r in llm.records("slow") if r.outcome != "started"), None),
        what="the stand-in to see the request end",
    )
    assert record.outcome == "disconnected" and record.tokens < 1000


def stored(rdb: redis.Redis, prefix: str) -> bytes:
    """Every value under the module's prefix: task hashes, event streams, queues, run-once keys."""
    chunks: list[bytes | str] = []
    for key in rdb.scan_iter(match=f"{prefix}:*", count=1000):
        kind = rdb.type(key)
        if kind == b"hash":
            chunks += [_bytes(k) + b"=" + _bytes(v) for k, v in rdb.hgetall(key).items()]
        elif kind == b"stream":
            chunks += [repr(entry) for entry in rdb.xrange(key) or []]
        elif kind == b"string":
            chunks.append(rdb.get(key) or b"")
        elif kind == b"list":
            chunks += rdb.lrange(key, 0, -1)
        elif kind == b"zset":
            chunks += cast(list[bytes], rdb.zrange(key, 0, -1))  # no scores asked for
        elif kind == b"set":
            chunks += list(rdb.smembers(key))
    return b"\n".join(map(_bytes, chunks))


def _bytes(value: bytes | str) -> bytes:
    """A reply as bytes (redis-py types replies `bytes | str`; this client never decodes)."""
    return value if isinstance(value, bytes) else value.encode()


def test_api_key_is_absent_from_everything_stored_and_logged(
    client: TaskClient, llm: StandIn, rdb: redis.Redis, prefix: str, worker_log: Path
) -> None:
    llm.script("secret-denied", Step("unauthorized"))
    llm.script("secret-drop", Step("drop", after=2))
    for model in ("secret-ok", "secret-denied", "secret-drop"):
        handle = client.submit("ai.chat", {"prompt": "keep it", "model": model})
        assert list(handle.watch())[-1].terminal
    assert {r.api_key for r in llm.records() if r.model.startswith("secret")} == {KEY}
    everything = stored(rdb, prefix)
    assert reply_text("keep it", TOKENS).encode() in everything  # the scan sees task data
    assert b"HTTP 401" in everything
    assert KEY.encode() not in everything

    # The worker logs each failure with its traceback; once the 401 is in the file, so is the rest.
    def logged() -> str | None:
        text = worker_log.read_text()
        return text if "HTTP 401" in text else None

    log = eventually(logged, what="the worker's log of the 401")
    assert KEY not in log
