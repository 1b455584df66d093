"""Nothing lost when the server or Redis dies, or a watcher stalls."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from taskcast.cli.redis_proc import RedisProcess, free_port
from taskcast.client import Event, TaskClient, TaskState, UnavailableError
from taskcast.v1 import tasks_pb2 as pb
from taskcast.v1 import tasks_pb2_grpc as pb_grpc
from tests.support import ServerProcess, WorkerProcess, eventually


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A Redis of this module's own (it gets killed), fsync always: nothing acknowledged lost."""
    proc = RedisProcess(tmp_path_factory.mktemp("redis-faults"), fsync="always").start()
    yield proc
    proc.stop()


@pytest.fixture
def server(own_redis: RedisProcess, prefix: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(own_redis.url, prefix, free_port()).start()
    yield proc
    proc.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def own_worker(own_redis: RedisProcess, prefix: str) -> Iterator[WorkerProcess]:
    proc = WorkerProcess(own_redis.url, prefix).start()
    yield proc
    proc.stop()


def gapless(events: list[Event]) -> bool:
    return [e.sequence for e in events] == list(range(1, len(events) + 1))


@pytest.mark.usefixtures("own_worker")
def test_server_killed_mid_stream_client_resumes_without_gap(server: ServerProcess) -> None:
    with TaskClient(server.address, reconnect_for=30) as client:
        handle = client.submit("demo.sleep", {"seconds": 1.5, "steps": 10})
        events: list[Event] = []
        for event in handle.watch():
            events.append(event)
            if len(events) == 3:
                server.stop(signal.SIGKILL)
                server.start()  # back on the same address
        assert gapless(events)
        assert events[-1].state is TaskState.SUCCEEDED
        assert len(events) == handle.get().last_sequence


@pytest.mark.usefixtures("own_worker")
def test_sigterm_ends_streams_with_a_resume_hint(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.address) as channel, TaskClient(server.address) as client:
        handle = client.submit("demo.sleep", {"seconds": 1, "steps": 10})
        stream = pb_grpc.TaskServiceStub(channel).WatchTask(pb.WatchTaskRequest(task_id=handle.id))
        seen = [next(stream).sequence, next(stream).sequence]
        assert server.stop(signal.SIGTERM) == 0
        with pytest.raises(grpc.RpcError) as info:
            seen += [e.sequence for e in stream]
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "watch again with after_sequence" in info.value.details()


@pytest.mark.usefixtures("own_worker")
def test_submits_acknowledged_before_a_server_kill_all_run(server: ServerProcess) -> None:
    acknowledged: list[str] = []
    failures: list[Exception] = []

    def submit_many() -> None:
        with TaskClient(server.address, timeout=2) as client:
            for i in range(300):
                try:
                    acknowledged.append(client.submit("test.echo", {"i": i}).id)
                except UnavailableError as exc:  # the kill, as the caller sees it
                    failures.append(exc)
                    return

    thread = threading.Thread(target=submit_many)
    thread.start()
    eventually(lambda: len(acknowledged) >= 20, what="submits under way")
    server.stop(signal.SIGKILL)
    thread.join(30)
    assert failures, "the kill should interrupt the burst"
    server.start()
    with TaskClient(server.address) as client:
        for task_id in acknowledged:
            assert client.handle(task_id).wait(timeout=30)["attempt"] == 1


def test_redis_killed_and_restarted_nothing_acknowledged_is_lost(
    own_redis: RedisProcess, own_worker: WorkerProcess, server: ServerProcess
) -> None:
    with TaskClient(server.address, reconnect_for=40) as client:
        running = client.submit("demo.sleep", {"seconds": 2, "steps": 8})
        queued = [client.submit("test.echo", {"i": i}, delay=0.5) for i in range(10)]
        events: list[Event] = []
        watch = running.watch()
        events += [next(watch), next(watch)]
        own_redis.kill()  # SIGKILL: no shutdown save; AOF with fsync=always holds every write
        with pytest.raises(UnavailableError) as info:
            client.submit("test.echo", {})
        assert any(d.DESCRIPTOR.name == "RetryInfo" for d in info.value.details)
        own_redis.start()  # same port, same AOF
        events += list(watch)  # the watch resumes by itself once Redis is back
        assert gapless(events)
        assert events[-1].state is TaskState.SUCCEEDED
        for h in queued:
            assert h.wait(timeout=60)["attempt"] >= 1
        after = client.submit("test.echo", {"after": True})
        assert after.wait(timeout=30)["payload"] == {"after": True}


@pytest.fixture
def small_buffer_server(own_redis: RedisProcess, prefix: str) -> Iterator[ServerProcess]:
    proc = ServerProcess(own_redis.url, prefix, free_port(), watcher_buffer="8").start()
    yield proc
    proc.stop(signal.SIGKILL)


@pytest.mark.usefixtures("own_worker")
def test_stuck_watcher_is_told_to_resume_and_slows_nobody(
    small_buffer_server: ServerProcess, tmp_path: Path
) -> None:
    address = small_buffer_server.address
    # A client that reads nothing: its HTTP/2 window (no auto-tuning) fills after a few events.
    options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 16384)]
    with grpc.insecure_channel(address, options=options) as channel, TaskClient(address) as client:
        handle = client.submit("test.chatty", {"n": 60, "size": 16384})
        stuck = pb_grpc.TaskServiceStub(channel).WatchTask(pb.WatchTaskRequest(task_id=handle.id))
        first = next(stuck)  # the stream is open; now it stops reading
        healthy = list(client.watch(handle.id))  # a normal watcher is not held back
        assert gapless(healthy) and healthy[-1].state is TaskState.SUCCEEDED
        got = [first]
        with pytest.raises(grpc.RpcError) as info:
            got += list(stuck)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # The server cannot know what reached us: we resume from what we received.
        assert "watch again with after_sequence" in info.value.details()
        last = got[-1].sequence
        rest = list(client.watch(handle.id, after_sequence=last))
        assert [e.sequence for e in got + rest] == [e.sequence for e in healthy]


def test_unavailable_redis_at_submit_is_quick_and_clear(tmp_path: Path, prefix: str) -> None:
    dead = RedisProcess(tmp_path / "never-started")  # a port nobody listens on
    server = ServerProcess(dead.url, prefix, free_port())
    server_started = False
    try:
        server.start()
        server_started = True
        with TaskClient(server.address) as client, pytest.raises(UnavailableError) as info:
            client.submit("test.echo", {})
        assert "Redis" in info.value.message
    finally:
        if server_started:
            server.stop(signal.SIGKILL)


@pytest.fixture
def fake_redis() -> Iterator[tuple[str, str]]:
    """Two loopback TCP servers that are not a working Redis: one answers like a web server,
    one accepts connections and never says a word."""
    import socket

    listeners = []
    for _ in range(2):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        listeners.append(sock)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve(sock: socket.socket, reply: bytes | None) -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            if reply is None:
                held.append(conn)  # silent: keep it open, answer nothing
            else:
                conn.sendall(reply)
                conn.close()

    threads = [
        threading.Thread(target=serve, args=(listeners[0], b"HTTP/1.1 400 Bad Request\r\n\r\n")),
        threading.Thread(target=serve, args=(listeners[1], None)),
    ]
    for t in threads:
        t.start()
    yield tuple(f"redis://127.0.0.1:{s.getsockname()[1]}/0" for s in listeners)  # type: ignore[misc]
    stop.set()
    for t in threads:
        t.join()
    for s in [*listeners, *held]:
        s.close()


@pytest.mark.parametrize(
    ("which", "expected"),
    [
        (0, "TASKCAST_REDIS_URL does not answer like Redis"),
        (1, "task store (Redis) unavailable"),
    ],
)
def test_a_store_that_is_not_a_working_redis_is_unavailable_not_internal(
    fake_redis: tuple[str, str], prefix: str, which: int, expected: str
) -> None:
    server = ServerProcess(fake_redis[which], prefix, free_port())
    try:
        server.start()
        with (
            TaskClient(server.address, timeout=20) as client,
            pytest.raises(UnavailableError) as info,
        ):
            client.get("0" * 32)
        assert expected in info.value.message
    finally:
        server.stop(signal.SIGKILL)
