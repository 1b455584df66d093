"""Bounds on what a handler writes: its JSON result and each output (or progress) event.

Every result is stored in the task hash, repeated in the SUCCEEDED event and published live;
every event is kept in the task's stream and buffered per watcher. Unbounded, one handler could
store an 84 MB result that `get` then cannot deliver. A result over the limit fails the attempt
for good (another attempt would produce it again); a long output is split, so streaming kinds
keep working.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from taskcast.worker.errors import NonRetryableError

__all__ = ["Limits", "clip", "encode_result", "split_output"]


@dataclass(frozen=True)
class Limits:
    """This worker's bounds, in bytes (`TASKCAST_MAX_RESULT_BYTES`, `TASKCAST_MAX_OUTPUT_BYTES`)."""

    max_result_bytes: int = 2 << 20
    max_output_bytes: int = 64 << 10


def encode_result(result: Any, limit: int) -> str:
    """`result` as JSON of at most `limit` bytes.

    Raises:
        NonRetryableError: it is not JSON-serialisable, or its JSON is longer than `limit`.
    """
    try:
        text = json.dumps(result)
    except (TypeError, ValueError) as exc:
        raise NonRetryableError(f"the result is not JSON-serialisable: {exc}") from exc
    if len(text) > limit:  # json.dumps escapes non-ASCII: one character is one byte
        raise NonRetryableError(
            f"the result is {len(text):,} bytes of JSON, more than this worker's limit of "
            f"{limit:,} (TASKCAST_MAX_RESULT_BYTES)"
        )
    return text


def split_output(text: str, limit: int) -> list[str]:
    """`text` in pieces of at most `limit` UTF-8 bytes (`limit` >= 4), never inside a character."""
    if len(text) * 4 <= limit:  # no character takes more than 4 bytes: no need to encode
        return [text]
    data = text.encode()
    pieces, start = [], 0
    while start < len(data):
        end = min(start + limit, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:  # a continuation byte: step back
            end -= 1
        pieces.append(data[start:end].decode())
        start = end
    return pieces


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, never inside a character."""
    return split_output(text, limit)[0] if text else text
