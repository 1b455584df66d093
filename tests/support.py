"""Helpers for tests: a background event loop, deadlines, real worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import redis

from taskcast.cli.redis_proc import RedisProcess
from taskcast.core import redisurl
from taskcast.core.calls import NewTask
from taskcast.core.layout import Layout
from taskcast.server.config import ServerSettings

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


class LoopThread:
    """An asyncio loop in a thread, for hosting the grpc.aio server beside sync tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the loop and join the thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def settings_for(redis_server: RedisProcess, prefix: str, **changes: Any) -> ServerSettings:
    """A test server's settings: loopback on a free port, keep-alives every 0.3 s, 1 s grace,
    and any `changes`."""
    fields: dict[str, Any] = {
        "redis_url": redis_server.url,
        "redis_prefix": prefix,
        "listen": "127.0.0.1:0",
        "keepalive": 0.3,
        "grace": 1.0,
    }
    return ServerSettings(**{**fields, **changes})


def tenants_file(directory: Path, tokens: dict[str, str]) -> str:
    """A tenants file in `directory` giving each tenant (key) one full-access token (value)."""
    path = directory / "tenants.toml"
    path.write_text(
        "".join(f'[tenants.{t}]\ntokens = ["{token}"]\n' for t, token in tokens.items())
    )
    return str(path)


def eventually(check: Callable[[], T | None], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)  # polling real processes that have no other signal to wait on


# Every process group a test started, so the session can kill whatever a failed fixture left.
STARTED: list[subprocess.Popen[bytes]] = []


def new_task(**changes: Any) -> NewTask:
    """A submission for store-level tests: no worker serves its queue (`unserved`), so its
    message stays where the submit script put it."""
    fields: dict[str, Any] = {
        "kind": "test.echo",
        "queue": "unserved",
        "payload": "{}",
        "labels": {},
        "max_attempts": 1,
        "timeout_ms": 1000,
        "not_before_ms": 0,
        "idempotency_key": "",
        "fingerprint": "",
    }
    return NewTask(**{**fields, **changes})


def command(
    *args: str, env: dict[str, str], timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`taskcast ARGS` as a user runs it (`stdin` its input), with `env` over this process's
    environment."""
    return subprocess.run(
        [sys.executable, "-m", "taskcast.cli.main", *args],
        input=stdin,
        env={**os.environ, "COLUMNS": "200", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def expired(get: Callable[[], object]) -> bool:
    """Whether `get` (a task's) answers NotFoundError: the task expired."""
    from taskcast.client import NotFoundError

    try:
        get()
    except NotFoundError:
        return True
    return False


def await_pruned(client: redis.Redis, layout: Layout, task_id: str, label: str) -> None:
    """Wait until the sweep took a SUCCEEDED `test.echo` task out of every index it was in."""
    indexes = (
        layout.index_all(),
        layout.index_kind("test.echo"),
        layout.index_state("SUCCEEDED"),
        layout.index_label(label),
    )
    for index in indexes:

        def pruned(i: str = index) -> bool:
            return client.zscore(i, task_id) is None

        eventually(pruned, what=f"{index} index pruned")


def drop_keys(client: redis.Redis, *layouts: Layout) -> None:
    """Delete every key under each layout's prefix (a test's own prefix, after the test)."""
    for layout in layouts:
        keys = client.keys(f"{layout.prefix}:*")
        if keys:
            client.delete(*keys)


def kill_leftovers() -> None:
    """SIGKILL every process group the tests started that still runs (and its Dramatiq group)."""
    for proc in STARTED:
        if proc.poll() is None:
            for group in _children(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


class WorkerProcess:
    """`taskcast worker tests.kinds` as a real child process group."""

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        *,
        processes: int = 1,
        threads: int = 4,
        extra_env: dict[str, str] | None = None,
        shutdown_timeout: float = 10.0,
        modules: tuple[str, ...] = ("tests.kinds",),
        log_file: Path | None = None,
        queues: tuple[str, ...] = (),
    ) -> None:
        self.redis_url, self.prefix = redis_url, prefix
        env = {
            **os.environ,
            "TASKCAST_REDIS_URL": redis_url,
            "TASKCAST_REDIS_PREFIX": prefix,
            "TASKCAST_LEASE": "2",
            "TASKCAST_REAP_INTERVAL": "0.2",
            "TASKCAST_RETRY_MIN_BACKOFF": "0.05",
            "TASKCAST_RETRY_MAX_BACKOFF": "0.2",
            "TASKCAST_POLL_INTERVAL_MS": "50",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.args = [
            sys.executable,
            "-m",
            "taskcast.cli.main",
            "--log-level",
            "WARNING",
            "worker",
            *modules,
            "--processes",
            str(processes),
            "--threads",
            str(threads),
            "--shutdown-timeout",
            str(shutdown_timeout),
            *(("--queues", *queues) if queues else ()),
        ]
        self.env = env
        self.log_file = log_file  # where its stderr (every process's log lines) goes, if given
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start and wait until its kinds are registered (a fresh registration)."""
        client = redisurl.sync_client(self.redis_url)  # any URL form, Sentinel's included
        key = Layout(self.prefix).kinds()
        client.delete(key)
        with contextlib.ExitStack() as files:
            err = files.enter_context(self.log_file.open("ab")) if self.log_file else None
            self.proc = subprocess.Popen(
                self.args, env=self.env, cwd=ROOT, start_new_session=True, stderr=err
            )
        STARTED.append(self.proc)
        try:
            eventually(lambda: client.hexists(key, "test.echo") or self._died(), 30, "worker boot")
        except BaseException:
            self._kill_all()  # a fixture that fails here never reaches its teardown
            raise
        finally:
            client.close()
        return self

    def _died(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}")
        return False

    def pids(self) -> list[int]:
        """Pids of the Dramatiq worker processes (supervisor -> dramatiq parent -> workers)."""
        assert self.proc is not None
        return [w for parent in _children(self.proc.pid) for w in _children(parent)]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """SIGTERM: a graceful stop through the supervisor, as a process manager would ask.
        SIGKILL: the machine dies (supervisor, Dramatiq and its workers at once)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if sig == signal.SIGKILL:
            self._kill_all()
            return
        os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill_all()

    def _kill_all(self) -> None:
        assert self.proc is not None
        for group in _children(self.proc.pid):  # the Dramatiq parent leads its own session
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class WorkerGroup:
    """Worker processes a test starts itself, all killed when it ends (the `workers` fixture)."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis_url, self.prefix = redis_url, prefix
        self.started: list[WorkerProcess] = []

    def start(self, **kwargs: Any) -> WorkerProcess:
        """Start one more `WorkerProcess` (its keyword arguments) and wait for its boot."""
        worker = WorkerProcess(self.redis_url, self.prefix, **kwargs)
        self.started.append(worker)
        return worker.start()

    def kill_all(self) -> None:
        """SIGKILL every group still running."""
        for worker in self.started:
            worker.stop(signal.SIGKILL)


class ServerProcess:
    """`taskcast server` as a real child process on a fixed port (so it can come back there)."""

    def __init__(
        self, redis_url: str, prefix: str, port: int, log_file: Path | None = None, **settings: str
    ) -> None:
        self.port, self.log_file = port, log_file
        self.env = {
            **os.environ,
            "TASKCAST_REDIS_URL": redis_url,
            "TASKCAST_REDIS_PREFIX": prefix,
            "TASKCAST_LISTEN": f"127.0.0.1:{port}",
            "TASKCAST_KEEPALIVE": "0.5",
            "TASKCAST_GRACE": "1",
            **{f"TASKCAST_{k.upper()}": v for k, v in settings.items()},
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """host:port."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServerProcess:
        """Start and wait until health says SERVING."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with contextlib.ExitStack() as files:
            err = files.enter_context(self.log_file.open("ab")) if self.log_file else None
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "taskcast.cli.main", "--log-level", "WARNING", "server"],
                env=self.env,
                cwd=ROOT,
                start_new_session=True,
                stderr=err,
            )
        STARTED.append(self.proc)
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def serving() -> bool:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.RpcError:
                    return False
                return reply.status == health_pb2.HealthCheckResponse.SERVING

            try:
                eventually(serving, 30, "server health")
            except BaseException:
                self.stop(signal.SIGKILL)
                raise
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        """Signal it and wait; returns its exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()
