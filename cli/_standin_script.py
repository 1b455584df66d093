"""What the stand-in model server says: scripted steps, request records, deterministic text."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Do", "Record", "Step", "prompt_of", "reply_text", "tokens_for", "words"]

Do = Literal["ok", "rate_limit", "error", "unauthorized", "drop", "malformed"]
PASSAGE = (
    "A queue turns slow work into a quick answer: the caller gets an id at once, and the work "
    "happens where waiting is cheap. Every step becomes an event that anyone can watch live, "
    "resume after a dropped connection, and replay later. Tokens like these arrive one by one, "
    "so a person sees the answer grow instead of staring at a spinner."
)


@dataclass(frozen=True)
class Step:
    """What the stand-in does with one request (scripted steps are used up in order).

    `do`: "ok" answers; "rate_limit" is 429 with `retry_after`; "error" is HTTP `status`;
    "unauthorized" is 401 quoting the key it got, as some servers do; "drop" closes the connection
    after `after` tokens; "malformed" sends a broken chunk after `after` tokens. `rate` (tokens/s,
    0 for no pause), `tokens` and `delay` (seconds before the first byte) override the server's.
    """

    do: Do = "ok"
    status: int = 500
    retry_after: float | None = None
    after: int = 3
    rate: float | None = None
    tokens: int | None = None
    delay: float = 0.0
    message: str = ""


@dataclass
class Record:
    """One request and what became of it: completed, disconnected (the client went away), dropped,
    malformed, rate_limited, error or unauthorized; `tokens` is how many were sent; `at` and
    `ended` are wall-clock times."""

    model: str
    stream: bool
    api_key: str
    body: dict[str, Any]
    outcome: str = "started"
    tokens: int = 0
    at: float = field(default_factory=time.time)
    ended: float | None = None


def words(text: str) -> list[str]:
    """Whitespace-separated words."""
    return text.split()


def reply_text(prompt: str, tokens: int = 48) -> str:
    """The deterministic answer to `prompt` (the last user message), `tokens` words long."""
    return "".join(tokens_for(prompt, tokens))


def tokens_for(prompt: str, n: int) -> list[str]:
    """The answer's `n` tokens: "You asked: <prompt>." then the passage, repeated as needed."""
    said = words(prompt)[:12]
    if said and said[-1][-1] not in ".?!":
        said[-1] += "."
    out = ["You", "asked:", *said] if said else []
    passage = words(PASSAGE)
    while len(out) < n:
        out += passage
    return [w if i == 0 else " " + w for i, w in enumerate(out[:n])]


def prompt_of(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message."""
    for turn in reversed(messages):
        if turn.get("role") == "user":
            content = turn.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""
