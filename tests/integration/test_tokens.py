"""Token budgets (`Tokens`, `TASKCAST_AI_TOKENS`): usage debited at finish, tasks held while the
budget is spent, and no window above the budget across worker processes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import cast

import pytest
import redis

from taskcast.cli.llm_standin import StandIn
from taskcast.client import LimitStats, TaskClient, TaskHandle, TaskState
from taskcast.core.layout import Layout
from tests.support import WorkerGroup, eventually

TOKENS = 40  # the stand-in's answer: 40 tokens, plus 4 for a four-word prompt
USED = 4 + TOKENS


@pytest.fixture(scope="module")
def llm() -> Iterator[StandIn]:
    """The stand-in model server: 400 tokens/s, 40-token answers."""
    with StandIn(rate=400, tokens=TOKENS) as server:
        yield server


def started_ms(handle: TaskHandle) -> int:
    """When the task's attempt was admitted (Redis's clock, stamped by `begin`)."""
    task = handle.get()
    assert task.started_at is not None
    return round(task.started_at.timestamp() * 1000)  # exact ms: int() may truncate 1 ms off


def waits(handle: TaskHandle) -> list[tuple[str, str, int]]:
    """The Waiting events of a finished task: (reason, key, limit)."""
    return [(e.reason, e.key, e.limit) for e in handle.watch() if e.type == "waiting"]


def test_usage_is_debited_and_holds_the_next_task_until_the_window_frees(
    client: TaskClient, workers: WorkerGroup, rdb: redis.Redis, prefix: str
) -> None:
    workers.start()
    account = uuid.uuid4().hex
    first = client.submit("test.tokens", {"account": account, "use": 95})
    assert first.wait(timeout=30) == 1
    # 95 used + 10 reserved > 100: held, though the reservation alone (10) would fit.
    second = client.submit("test.tokens", {"account": account, "use": 5})
    assert second.wait(timeout=30) == 1
    assert waits(second) == [("tokens", account, 100)]
    assert started_ms(second) >= started_ms(first) + 1000  # only once the first left the window
    assert waits(first) == []
    # The log keeps the usage in place of the reservation (it may have expired since: 2 periods).
    members = cast("list[bytes]", rdb.zrange(Layout(prefix).limit_tokens(account), 0, -1))
    assert all(not m.endswith(b":10") for m in members)


def test_an_attempt_without_a_usage_report_keeps_its_reservation(
    client: TaskClient, workers: WorkerGroup
) -> None:
    workers.start()
    account = uuid.uuid4().hex
    handles = [client.submit("test.tokens", {"account": account}) for _ in range(12)]
    assert [h.wait(timeout=30) for h in handles] == [1] * 12
    # 10 reserved each, never replaced: at most 10 start within any second.
    starts = sorted(started_ms(h) for h in handles)
    assert max(sum(1 for s in starts if t <= s < t + 1000) for t in starts) <= 10
    assert any(waits(h) for h in handles)


def test_a_budget_of_reserve_1_is_overdrawn_by_the_last_start_then_holds(
    client: TaskClient, workers: WorkerGroup
) -> None:
    workers.start()
    account = uuid.uuid4().hex
    for use in (300, 600, 200):  # 900 used + 1 reserved fits 1,000: the third starts, and overdraws
        client.submit("test.tokens_minute", {"account": account, "use": use}).wait(timeout=30)

    def figures() -> LimitStats:
        [found] = [x for x in client.stats().limits if x.key == account]
        return found

    assert figures() == LimitStats("tokens", account, 1000, 60.0, 1100, 0)
    held = client.submit("test.tokens_minute", {"account": account, "use": 1})
    eventually(lambda: held.get().waiting_for == "tokens", 30, "the fourth task held")
    assert figures().waiting == 1
    assert held.cancel().state is TaskState.CANCELLED  # not a minute's wait in a test
    assert figures() == LimitStats("tokens", account, 1000, 60.0, 1100, 0)
    assert [(e.reason, e.key, e.limit, e.period) for e in held.watch() if e.type == "waiting"] == [
        ("tokens", account, 1000, 60.0)
    ]


def ai_env(llm: StandIn, budget: str, reserve: int) -> dict[str, str]:
    """A worker's settings for `ai.chat` against the stand-in under a token budget."""
    return {
        "TASKCAST_AI_BASE_URL": llm.url,
        "TASKCAST_AI_API_KEY": "sk-test",
        "TASKCAST_AI_TOKENS": budget,
        "TASKCAST_AI_TOKENS_RESERVE": str(reserve),
    }


def test_ai_chat_debits_the_usage_the_model_server_reports(
    client: TaskClient, workers: WorkerGroup, llm: StandIn
) -> None:
    workers.start(extra_env=ai_env(llm, "100/m", 1))
    model = f"tpm-{uuid.uuid4().hex[:8]}"
    payload = {"prompt": "Tell me about queues", "model": model}
    for _ in range(3):  # 44 + 44 + 1 reserved fit 100: the third starts, and overdraws
        client.submit("ai.chat", payload).wait(timeout=30)
    [figures] = [x for x in client.stats().limits if x.key == model]
    assert figures == LimitStats("tokens", model, 100, 60.0, 3 * USED, 0)
    held = client.submit("ai.chat", payload)
    eventually(lambda: held.get().waiting_for == "tokens", 30, "the fourth call held")
    held.cancel()
    assert len(llm.records(model)) == 3  # the held task never reached the model server


def test_ai_chat_keeps_every_window_within_its_budget_across_two_workers(
    client: TaskClient, workers: WorkerGroup, llm: StandIn
) -> None:
    for _ in range(2):  # 50 reserved: at least one call's usage, so no overdraft
        workers.start(extra_env=ai_env(llm, "200/s", 50))
    model = f"tpm-{uuid.uuid4().hex[:8]}"
    handles = [
        client.submit("ai.chat", {"prompt": "Tell me about queues", "model": model})
        for _ in range(16)
    ]
    results = [h.wait(timeout=60) for h in handles]
    assert [r["usage"]["total_tokens"] for r in results] == [USED] * 16
    assert all(h.get().attempt == 1 for h in handles)  # held is no attempt
    # By the usage each call reported, counted at its start: no 1 s window above 200 tokens.
    starts = sorted(started_ms(h) for h in handles)
    worst = max(sum(USED for s in starts if t <= s < t + 1000) for t in starts)
    assert worst <= 200
    assert {w for h in handles for w in waits(h)} == {("tokens", model, 200)}
    assert len(llm.records(model)) == 16
