"""A server interceptor that wraps each method's handler once and reuses the wrapper."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

__all__ = ["WrappingInterceptor"]


class WrappingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc has no stubs
    """Hands grpc a wrapped twin of each handler, made once per method (a handful of entries).

    Subclasses say how to wrap (`wrap`); a handler that changed (a new registration) gets a new
    twin.
    """

    def __init__(self) -> None:
        self._twins: dict[str, tuple[Any, Any]] = {}  # method -> (handler as found, its twin)

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], details: Any
    ) -> Any:
        """The handler found, wrapped (cached per method); unknown methods pass through."""
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        known = self._twins.get(method)
        if known is None or known[0] is not handler:
            known = (handler, self.wrap(handler, method))
            self._twins[method] = known
        return known[1]

    def wrap(self, handler: Any, method: str) -> Any:
        """The twin of `handler` for `method` (e.g. "/taskcast.v1.TaskService/SubmitTask")."""
        raise NotImplementedError
