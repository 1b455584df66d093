"""The stand-in model server over plain HTTP: whole answers, models, scripting from outside."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from taskcast.cli.llm_standin import StandIn, reply_text


@pytest.fixture
def llm() -> Iterator[StandIn]:
    with StandIn(rate=0, tokens=8, api_key="k") as server:
        yield server


def call(url: str, body: dict[str, Any] | None = None, key: str = "k") -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req, timeout=10) as reply:
        return json.loads(reply.read())


def test_whole_answer_is_deterministic(llm: StandIn) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
    answer = call(f"{llm.url}/chat/completions", body)
    assert answer["choices"][0]["message"]["content"] == reply_text("hello there", 8)
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"] == {"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10}
    limited = call(f"{llm.url}/chat/completions", {**body, "max_tokens": 3})
    assert limited["choices"][0]["finish_reason"] == "length"
    assert call(f"{llm.url}/models")["data"][0]["id"] == "standin"


def test_wrong_key_is_refused(llm: StandIn) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(urllib.error.HTTPError) as info:
        call(f"{llm.url}/chat/completions", body, key="wrong")
    assert info.value.code == 401
    info.value.close()
    assert [r.outcome for r in llm.records("m")] == ["unauthorized"]


def test_scripted_over_http(llm: StandIn) -> None:
    root = llm.url.removesuffix("/v1")
    steps = [{"do": "rate_limit", "retry_after": 3}]
    assert call(f"{root}/_standin/script", {"model": "s", "steps": steps}) == {"ok": True}
    with pytest.raises(urllib.error.HTTPError) as info:
        call(f"{llm.url}/chat/completions", {"model": "s", "messages": []})
    assert info.value.code == 429 and info.value.headers["Retry-After"] == "3"
    info.value.close()
    records = call(f"{root}/_standin/records")
    assert [(r["model"], r["outcome"]) for r in records] == [("s", "rate_limited")]


def test_a_burst_of_streams_is_served() -> None:
    """200 clients connecting at the same instant all get their whole stream (regression: with
    socketserver's listen backlog of 5, about half were reset)."""
    n = 200
    body = {"model": "burst", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with StandIn(rate=50, tokens=8) as llm:
        together = threading.Barrier(n)

        def stream(_: int) -> bytes:
            together.wait(30)  # every thread connects at once
            req = urllib.request.Request(f"{llm.url}/chat/completions", json.dumps(body).encode())
            with urllib.request.urlopen(req, timeout=60) as reply:
                return bytes(reply.read())

        with ThreadPoolExecutor(n) as pool:
            replies = list(pool.map(stream, range(n)))
        records = llm.records("burst")
    assert all(r.rstrip().endswith(b"data: [DONE]") for r in replies)
    assert [(r.outcome, r.tokens) for r in records] == [("completed", 8)] * n
