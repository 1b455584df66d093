"""The one root of every exception taskcast raises, in the client and in workers.

TaskcastError
├── taskcast.client: RpcError, TaskFailedError, TaskCancelledError, WaitTimeoutError, ...
└── taskcast.worker: NonRetryableError, RetryAfter, TaskCancelled

It imports nothing, so a client-only install (grpc and protobuf, no redis or dramatiq) and a
worker (never grpc) can both derive from it.
"""

from __future__ import annotations

__all__ = ["TaskcastError"]


class TaskcastError(Exception):
    """Root of every exception taskcast raises, in the client and in workers."""
