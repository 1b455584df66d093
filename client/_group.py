"""The client core of WatchTasks (`watch_group`), with no I/O: the per-task cursors it keeps,
so a broken stream resumes with every task where it left off.

The cursor is the map {task id: last sequence received} of the tasks seen so far; the server
replays each task after its entry (and tasks not in the map from their first event), so a
resumed group watch repeats and skips nothing, per task. It is bounded by the group size the
server allows (10,000 tasks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Unpack

from taskcast.client._requests import Watch, WatchOptions
from taskcast.client._types import Event
from taskcast.v1 import tasks_pb2 as pb


class GroupWatch(Watch):
    """One `watch_group`: the group's label, its cursors, and `Watch`'s resume rules."""

    rpc = "WatchTasks"

    def __init__(
        self,
        label: str,
        cursors: Mapping[str, int] | None,
        end_when_done: bool,
        reconnect_for: float,
        **options: Unpack[WatchOptions],
    ) -> None:
        super().__init__("", 0, reconnect_for, **options)
        self.what = f"label {label}"
        self.label = label
        self.end_when_done = end_when_done
        #: per task, the last sequence handed on: what a resume sends
        self.cursors: dict[str, int] = dict(cursors or {})

    def request(self) -> pb.WatchTasksRequest:
        """The request that opens (or resumes) the stream, with every cursor so far."""
        return pb.WatchTasksRequest(
            label=self.label,
            cursors=[pb.TaskCursor(task_id=t, after_sequence=s) for t, s in self.cursors.items()],
            end_when_done=self.end_when_done,
        )

    def receive(self, raw: pb.TaskEvent) -> Event | None:
        """The event to hand on (its task's cursor moved), or None for an unwanted keep-alive."""
        if raw.sequence:
            self.cursors[raw.task_id] = raw.sequence
        return super().receive(raw)
