"""The standard health service, with its Watch streams bounded.

Health stays open without a token (load balancers and probes), so its streams are the one thing an
unauthenticated client can hold open: 10,000 of them took a server from 74 to 283 MB. Past
`limit` concurrent Watch streams a new one is answered RESOURCE_EXHAUSTED with a RetryInfo.
`Check` is unary and needs no bound.
"""

from __future__ import annotations

from typing import Any

from grpc_health.v1 import health, health_pb2

from taskcast.server.errors import ResourceExhausted, abort


class BoundedHealth(health.aio.HealthServicer):  # type: ignore[misc]  # grpc has no stubs
    """`grpc_health`'s asyncio servicer with at most `limit` Watch streams at once."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.watching = 0

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        """Stream the service's status, unless `limit` streams are open already."""
        if self.watching >= self.limit:
            await abort(
                context,
                ResourceExhausted(
                    f"this server already has {self.watching} health watchers; "
                    "retry later, or poll with Check",
                    retry_after=5.0,
                ),
            )
        self.watching += 1
        try:
            await super().Watch(request, context)
        finally:
            self.watching -= 1
