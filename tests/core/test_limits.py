"""How kinds declare limits, and the keys built from payloads (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from taskcast.core.kinds import KindInfo
from taskcast.core.limits import (
    Concurrency,
    LimitKeyError,
    Rate,
    TokenLimit,
    Tokens,
    expand,
    rate_text,
)


def test_a_rate_reads_per_second_and_per_minute() -> None:
    assert (Rate("20/s").count, Rate("20/s").period_ms) == (20, 1000)
    assert (Rate(" 500 / m ").count, Rate("500/m").period_ms) == (500, 60_000)
    assert rate_text(500, 60_000) == "500/m"


@pytest.mark.parametrize("spec", ["20", "0/s", "20/h", "x/s", "100001/s", ""])
def test_a_bad_rate_is_refused_where_the_kind_is_declared(spec: str) -> None:
    with pytest.raises(ValueError, match="N/s"):
        Rate(spec)


@pytest.mark.parametrize(
    ("limit", "key"), [(0, None), (10_001, None), (3, ""), (3, "{customer}"), (3, "x" * 129)]
)
def test_a_bad_concurrency_is_refused(limit: int, key: str | None) -> None:
    with pytest.raises(ValueError, match=r"concurrency limit|limit key"):
        Concurrency(limit, key)


def test_keys_are_built_from_the_payload() -> None:
    payload = {"customer": "acme", "account": {"id": 7}}
    assert expand(None, "ai.chat", payload) == "ai.chat"
    assert expand("{payload.customer}", "k", payload) == "acme"
    assert expand("openai:{payload.account.id}/{payload.customer}", "k", payload) == "openai:7/acme"


@pytest.mark.parametrize(
    ("payload", "field"),
    [({}, "payload_json.customer"), ({"customer": {"a": 1}}, "payload_json.customer")],
)
def test_a_missing_or_odd_key_field_names_the_field(payload: dict[str, Any], field: str) -> None:
    with pytest.raises(LimitKeyError) as info:
        expand("{payload.customer}", "k", payload)
    assert info.value.field == field


def test_declared_limits_travel_in_the_kind_record() -> None:
    info = KindInfo(concurrency=Concurrency(3, "{payload.customer}"), rate=Rate("20/s"))
    assert KindInfo.from_json(info.to_json()) == info
    assert KindInfo.from_json(KindInfo().to_json()).concurrency is None


def test_a_token_budget_reads_its_spec_and_builds_its_key_or_falls_back() -> None:
    budget = Tokens("90000/m", key="{payload.model}", reserve=500, fallback="gpt-4o-mini")
    assert (budget.budget, budget.period_ms, budget.from_payload) == (90_000, 60_000, True)
    assert budget.of("ai.chat", {"model": "o3"}) == TokenLimit("o3", 90_000, 60_000, 500)
    assert budget.of("ai.chat", {}).key == "gpt-4o-mini"  # the model a payload without one gets
    assert budget.of("ai.chat", None).key == "gpt-4o-mini"  # a task gone meanwhile
    plain = Tokens("2000/s")
    assert not plain.from_payload and plain.of("k", {}) == TokenLimit("k", 2000, 1000, 1)


@pytest.mark.parametrize(
    ("spec", "reserve", "match"),
    [("0/m", 1, "N/s"), ("1000000001/m", 1, "N/s"), ("10/h", 1, "N/s"), ("10/s", 11, "reserv")],
)
def test_a_bad_token_budget_is_refused(spec: str, reserve: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Tokens(spec, reserve=reserve)
