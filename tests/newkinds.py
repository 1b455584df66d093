"""A kind only some test workers serve: the new version of a rolling deploy."""

from __future__ import annotations

from typing import Any

from taskcast.worker import TaskContext, task


@task("test.newkind")
def newkind(payload: dict[str, Any], ctx: TaskContext) -> str:
    """Answer which kind ran."""
    return "new"
