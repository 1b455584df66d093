"""Reading Server-Sent Events as a browser's EventSource does, for the gateway tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Frame:
    """One SSE event as a browser's EventSource parses it, or a comment line."""

    data: str = ""
    id: str | None = None
    event: str = "message"
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.data)


async def frames(response: aiohttp.ClientResponse) -> AsyncIterator[Frame]:
    """The frames of an event stream, as the SSE spec splits them (blank line ends one)."""
    frame = Frame()
    data: list[str] = []
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if not line:
            frame.data = "\n".join(data)
            yield frame
            frame, data = Frame(), []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if not name:
            frame.comments.append(value)
        elif name == "data":
            data.append(value)
        elif name == "id":
            frame.id = value
        elif name == "event":
            frame.event = value
        elif name == "retry":
            frame.retry = int(value)


async def read_all(response: aiohttp.ClientResponse) -> list[Frame]:
    """Every frame, up to the server closing the stream."""
    return [f async for f in frames(response)]
