"""Retry-After parsing and secret scrubbing shared by the built-in kinds."""

from __future__ import annotations

import email.utils

import pytest

from taskcast.worker.kinds._upstream import MAX_RETRY_AFTER, Scrubber, retry_after, shorten


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": " 1.5 "}, 1.5),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after": "99999999"}, MAX_RETRY_AFTER),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "x", "retry-after": "9"}, 9.0),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after(headers) == seconds


def test_retry_after_http_date() -> None:
    now = 1_800_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after({"retry-after": date}, now=now) == 30.0
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert retry_after({"retry-after": past}, now=now) == 0.0


def test_scrubber_removes_secrets_and_bearer_tokens() -> None:
    scrub = Scrubber(["sk-secret-123", None, "", "abc"])  # too short to be a key: left alone
    text = "key sk-secret-123 sent as Authorization: Bearer tok.en-42 and basic dXNlcjpw"
    assert scrub(text) == (
        "key [redacted] sent as Authorization: Bearer [redacted] and basic [redacted]"
    )
    assert scrub("abc is fine") == "abc is fine"


def test_shorten_flattens_and_cuts() -> None:
    assert shorten("a\n  b\tc") == "a b c"
    assert shorten("x" * 500, 10) == "xxxxxxx..."
