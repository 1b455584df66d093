"""SIGHUP makes a running `taskcast server` read its tenants file again."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskcast.cli.redis_proc import RedisProcess, free_port
from taskcast.client import TaskClient, UnauthenticatedError
from tests.support import ServerProcess, eventually, tenants_file

OLD, NEW = "token-old", "token-new"


@pytest.fixture
def server(redis_server: RedisProcess, prefix: str, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server whose tenants file gives acme the token OLD, logging to a file."""
    path = tenants_file(tmp_path, {"acme": OLD})
    proc = ServerProcess(
        redis_server.url, prefix, free_port(), log_file=tmp_path / "server.log", tenants_file=path
    ).start()
    yield proc
    proc.stop()


def accepted(server: ServerProcess, token: str) -> bool:
    """Whether the server takes `token` (a read: ListKinds)."""
    with TaskClient(server.address, token=token) as client:
        try:
            client.kinds()
        except UnauthenticatedError:
            return False
    return True


def hangup(server: ServerProcess) -> None:
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)


def test_sighup_swaps_the_tokens_and_a_bad_file_keeps_them(
    server: ServerProcess, tmp_path: Path
) -> None:
    assert accepted(server, OLD) and not accepted(server, NEW)
    tenants_file(tmp_path, {"acme": NEW})
    hangup(server)
    eventually(lambda: accepted(server, NEW), 20, "the new token accepted")
    assert not accepted(server, OLD)  # removed from the file: refused from the reload on

    (tmp_path / "tenants.toml").write_text("[tenants.acme\n")  # not TOML
    hangup(server)
    log = tmp_path / "server.log"
    eventually(lambda: "tenants not reloaded" in log.read_text(), 20, "the refusal logged")
    assert "not valid TOML" in log.read_text()
    assert accepted(server, NEW)  # still running, with the tokens it had
    assert server.proc is not None and server.proc.poll() is None
