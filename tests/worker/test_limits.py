"""The bounds on results and output events, as pure functions."""

from __future__ import annotations

import pytest

from taskcast.worker.errors import NonRetryableError
from taskcast.worker.limits import clip, encode_result, split_output


@pytest.mark.parametrize("text", ["a" * 10_000, "é" * 3001, "€x" * 2000, "🙂" * 1001, "short"])
def test_output_splits_on_character_boundaries_within_the_limit(text: str) -> None:
    pieces = split_output(text, 1024)
    assert "".join(pieces) == text
    assert all(0 < len(p.encode()) <= 1024 for p in pieces)


def test_clip_keeps_a_prefix_within_the_limit() -> None:
    assert clip("é" * 1000, 1025) == "é" * 512 and clip("", 1024) == ""


def test_a_result_over_the_limit_names_its_size_and_the_limit() -> None:
    assert encode_result({"a": "x" * 10}, 1024) == '{"a": "xxxxxxxxxx"}'
    with pytest.raises(NonRetryableError, match=r"2,010 bytes .* limit of 2,000"):
        encode_result("x" * 2008, 2000)
    with pytest.raises(NonRetryableError, match="not JSON-serialisable"):
        encode_result({1, 2}, 2000)
