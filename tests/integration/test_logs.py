"""`--log-format json`: a real worker writes one JSON object a line, and every line written while
an attempt runs names its task, kind and attempt (sync kinds in a worker thread, async ones on
the slot loop)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import TaskClient
from tests.support import WorkerProcess, eventually


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the worker's stderr goes."""
    return tmp_path_factory.mktemp("logs") / "worker.log"


@pytest.fixture(scope="module")
def worker(redis_server: RedisProcess, prefix: str, log_file: Path) -> Iterator[WorkerProcess]:
    """A real worker logging JSON to `log_file` (overrides the conftest's)."""
    proc = WorkerProcess(
        redis_server.url, prefix, extra_env={"TASKCAST_LOG_FORMAT": "json"}, log_file=log_file
    ).start()
    yield proc
    proc.stop()


def lines_of(log_file: Path) -> list[dict[str, Any]]:
    """The JSON lines the worker wrote so far (a line from Dramatiq's parent process is text)."""
    out = []
    for line in log_file.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


@pytest.mark.parametrize("kind", ["test.logs", "test.async_logs"])
def test_a_handlers_log_line_is_json_naming_task_kind_and_attempt(
    worker: WorkerProcess, client: TaskClient, log_file: Path, kind: str
) -> None:
    handle = client.submit(kind, {"mark": f"mark-{kind}"})
    assert handle.wait(timeout=20) == "logged"

    def mine() -> list[dict[str, Any]]:
        return [r for r in lines_of(log_file) if f"mark-{kind}" in r["message"]]

    (line,) = eventually(mine, 10, "the handler's log line")
    assert line["level"] == "WARNING" and line["logger"] == "tests.kinds"
    assert line["time"].endswith("+00:00")
    assert (line["task_id"], line["kind"], line["attempt"]) == (handle.id, kind, 1)


def test_a_failed_attempts_warning_names_it_too(
    worker: WorkerProcess, client: TaskClient, log_file: Path
) -> None:
    handle = client.submit("test.fatal", {})
    eventually(lambda: client.get(handle.id).state.value == "FAILED", 20, "the task to fail")

    def warning() -> list[dict[str, Any]]:
        return [r for r in lines_of(log_file) if r.get("task_id") == handle.id]

    (line,) = eventually(warning, 10, "the failure's log line")
    assert "this cannot work" in line["message"]
    assert (line["kind"], line["attempt"], line["level"]) == ("test.fatal", 1, "WARNING")


def test_every_line_is_json_but_dramatiqs_parent(log_file: Path, worker: WorkerProcess) -> None:
    text = [ln for ln in log_file.read_text().splitlines() if ln and not ln.startswith("{")]
    assert all("[dramatiq.MainProcess]" in ln for ln in text), text
