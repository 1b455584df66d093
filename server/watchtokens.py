"""Watch tokens: short-lived signed grants to watch (and maybe cancel) one task, for browsers.

A backend with a full-access token asks for one (CreateWatchToken) and hands it to a page, which
opens the HTTP gateway with it (`?token=`, as EventSource cannot send headers). The format is
compact and self-contained, so nothing is stored per token:

    base64url(JSON {"v": 1, "task": <id>, "exp": <ms since the epoch>, "cancel": <bool>,
                    "tn": <tenant>, for a tenant other than the default one})
    "." base64url(HMAC-SHA256(key, <the first part as ASCII>))        (no "=" padding)

The key is TASKCAST_TOKEN_SECRET when set, else a random 32-byte key made once in Redis (SET NX
on `Layout.watch_token_key`) and read on first use, so every server process of a deployment
verifies every other's tokens. Expiry is judged by the verifying server's own clock, not Redis's:
a token is a credential checked without a round trip, so keep hosts on NTP (a clock that is
behind by s seconds accepts tokens s seconds longer).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from taskcast.core.layout import DEFAULT_TENANT
from taskcast.server.auth import Grant
from taskcast.server.errors import Unauthenticated
from taskcast.server.validation import Problems

VERSION = 1
DEFAULT_TTL_MS = 15 * 60_000
MIN_TTL_MS, MAX_TTL_MS = 1_000, 24 * 3600_000
#: The longest token read: a 128-character id of 4-byte UTF-8 characters makes about 800.
MAX_TOKEN_CHARS = 1024
_SHAPE = re.compile(r"[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{43}")


def ttl_ms(value: int | None, problems: Problems) -> int:
    """A requested lifetime in ms (None: the default), or a problem when out of bounds."""
    if value is None:
        return DEFAULT_TTL_MS
    if not MIN_TTL_MS <= value <= MAX_TTL_MS:
        problems.add("ttl", "must be 1 second to 24 hours (unset: 15 minutes)")
    return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class WatchTokens:
    """Issues and verifies watch tokens with one key, loaded once (`load_key`) and kept."""

    def __init__(
        self, load_key: Callable[[], Awaitable[bytes]], clock: Callable[[], float] = time.time
    ) -> None:
        self._load_key, self._clock = load_key, clock
        self._key: bytes | None = None
        self._lock = asyncio.Lock()

    async def key(self) -> bytes:
        """The signing key (one Redis round trip the first time, when it lives there)."""
        if self._key is None:
            async with self._lock:
                if self._key is None:
                    self._key = await self._load_key()
        return self._key

    def _sign(self, key: bytes, body: str) -> str:
        return _b64(hmac.new(key, body.encode(), hashlib.sha256).digest())

    async def issue(
        self, task_id: str, ttl: int, cancel: bool, tenant: str = DEFAULT_TENANT
    ) -> tuple[str, int]:
        """A token for `tenant`'s task `task_id` valid `ttl` ms from now, and when it expires
        (ms). The default tenant's tokens carry no tenant claim."""
        expires = int(self._clock() * 1000) + ttl
        claims: dict[str, Any] = {"v": VERSION, "task": task_id, "exp": expires, "cancel": cancel}
        if tenant != DEFAULT_TENANT:
            claims["tn"] = tenant
        body = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode())
        return f"{body}.{self._sign(await self.key(), body)}", expires

    def looks_like(self, token: str) -> bool:
        """Whether `token` has a watch token's shape."""
        return len(token) <= MAX_TOKEN_CHARS and _SHAPE.fullmatch(token) is not None

    async def verify(self, token: str) -> Grant:
        """The grant of a valid token.

        Raises:
            Unauthenticated: malformed, signed with another key or altered, or expired.
        """
        body, _, signature = token.partition(".")
        if not self.looks_like(token):
            raise Unauthenticated("malformed watch token")
        if not hmac.compare_digest(signature, self._sign(await self.key(), body)):
            raise Unauthenticated(
                "watch token signature does not match (altered, or signed with another key)"
            )
        try:
            claims = json.loads(_unb64(body))
            grant = Grant(
                str(claims["task"]),
                int(claims["exp"]),
                bool(claims["cancel"]),
                str(claims.get("tn", DEFAULT_TENANT)),
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise Unauthenticated("malformed watch token") from None
        if claims.get("v") != VERSION:
            raise Unauthenticated(f"watch token version {claims.get('v')!r} is not known here")
        if grant.expires_ms <= int(self._clock() * 1000):
            raise Unauthenticated("watch token expired; ask the backend for a new one")
        return grant
