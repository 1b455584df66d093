"""The processes a benchmark starts: Redis, taskcast server and workers, baseline workers.

Every process is a child in its own session, stopped (group-wide) when the `Stack` closes, and
measured with psutil: CPU seconds over a window, summed over each process tree, and RSS.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

from taskcast.cli.redis_proc import RedisProcess, free_port
from taskcast.core.layout import Layout

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(PY).parent
PREFIX = "tcbench"
LAYOUT = Layout(PREFIX)


def wait_for(check: Callable[[], object], timeout: float, what: str, every: float = 0.02) -> None:
    """Poll `check` until truthy; TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)  # polling other processes that have no readiness signal


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Child:
    """One started command (a process group)."""

    name: str
    proc: subprocess.Popen[bytes]

    def tree(self) -> list[psutil.Process]:
        """The process and every descendant alive now."""
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def alive(self) -> bool:
        """Whether the top process still runs."""
        return self.proc.poll() is None

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM to the group, SIGKILL if it lingers."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _cpu(p: psutil.Process) -> float:
    try:
        t = p.cpu_times()
        return float(t.user + t.system)
    except psutil.NoSuchProcess:
        return 0.0


class CpuMeter:
    """CPU seconds used by named process groups between `start()` and `stop()`."""

    def __init__(self, groups: dict[str, Callable[[], list[psutil.Process]]]) -> None:
        self.groups = groups
        self._before: dict[str, dict[int, float]] = {}
        self.seconds: dict[str, float] = {}

    def _snap(self) -> dict[str, dict[int, float]]:
        return {g: {p.pid: _cpu(p) for p in f()} for g, f in self.groups.items()}

    def start(self) -> None:
        """Take the first reading."""
        self._before = self._snap()

    def stop(self) -> dict[str, float]:
        """CPU seconds per group since `start()` (processes that ended meanwhile are lost)."""
        after = self._snap()
        self.seconds = {
            g: sum(t - self._before[g].get(pid, 0.0) for pid, t in after[g].items())
            for g in self.groups
        }
        return self.seconds


class CommandMeter:
    """Redis commands run between `start()` and `stop()`, from `INFO commandstats`: calls and
    microseconds per command name. A script's own commands count under their names too, beside
    its `evalsha` (whose time includes theirs)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._before: dict[str, tuple[int, int]] = {}

    def _snap(self) -> dict[str, tuple[int, int]]:
        info = self.client.info("commandstats")
        return {
            k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for k, v in info.items()
        }

    def start(self) -> None:
        """Take the first reading."""
        self._before = self._snap()

    def stop(self, per: int) -> dict[str, dict[str, float]]:
        """Per command, calls and microseconds since `start()`, each divided by `per` (tasks)."""
        out = {}
        for name, (calls, usec) in sorted(self._snap().items()):
            c0, u0 = self._before.get(name, (0, 0))
            if name != "info" and calls > c0:
                out[name] = {"calls": (calls - c0) / per, "usec": (usec - u0) / per}
        return out


def me() -> list[psutil.Process]:
    """The benchmark process itself (the submitting client)."""
    return [psutil.Process()]


@dataclass
class Stack:
    """Everything one benchmark started, stopped in reverse on close."""

    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="taskcast-bench-")))
    children: list[Child] = field(default_factory=list)
    redis_procs: list[RedisProcess] = field(default_factory=list)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every child, then every Redis."""
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        for r in self.redis_procs:
            r.stop()
        self.redis_procs.clear()
        if not os.environ.get("BENCH_KEEP_LOGS"):  # set it to keep logs and Redis data
            shutil.rmtree(self.tmp, ignore_errors=True)

    def redis(self) -> RedisProcess:
        """A private redis-server (no AOF: the baselines keep nothing on disk either)."""
        r = RedisProcess(self.tmp / f"redis-{len(self.redis_procs)}", appendonly=False).start()
        self.redis_procs.append(r)
        return r

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Child:
        """Start a command in its own session, output to a log file in the stack's folder."""
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child = Child(name, proc)
        self.children.append(child)
        return child

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The end of a child's log, for error messages."""
        path = self.tmp / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    # --- taskcast ---------------------------------------------------------------------------

    def server(
        self,
        redis_url: str,
        *,
        accept_any_kind: bool = False,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> tuple[Child, int]:
        """`taskcast server` (or `command`) on a free port; returns once it accepts connections.

        `env` adds to (or overrides) the TASKCAST_* variables set here.
        """
        port = free_port()
        child = self.spawn(
            "server",
            command or [PY, "-m", "taskcast.cli.main", "--log-level", "WARNING", "server"],
            {
                "TASKCAST_REDIS_URL": redis_url,
                "TASKCAST_REDIS_PREFIX": PREFIX,
                "TASKCAST_LISTEN": f"127.0.0.1:{port}",
                "TASKCAST_ACCEPT_ANY_KIND": "true" if accept_any_kind else "false",
                **(env or {}),
            },
        )
        self._await(child, lambda: port_open(port), "taskcast server")
        return child, port

    def workers(
        self,
        redis_url: str,
        processes: int,
        threads: int,
        *,
        name: str = "workers",
        setup: str | None = None,
        **env: str,
    ) -> Child:
        """`taskcast worker bench.kinds -p N -t T`; returns once its kinds are registered.

        With `setup` (`module:function`) Dramatiq's CLI runs that boot
        function instead of taskcast's, with the same settings and poll interval.
        """
        client = redis.Redis.from_url(redis_url)
        client.delete(LAYOUT.kinds())
        if setup is not None:
            env = {"dramatiq_worker_timeout": env.get("TASKCAST_POLL_INTERVAL_MS", "1000"), **env}
        command = (
            [
                PY,
                "-m",
                "dramatiq",
                setup,
                "bench.kinds",
                "--processes",
                str(processes),
                "--threads",
                str(threads),
                "--worker-shutdown-timeout",
                "5000",
            ]
            if setup is not None
            else None
        )
        child = self.spawn(
            name,
            command
            or [
                PY,
                "-m",
                "taskcast.cli.main",
                "--log-level",
                "WARNING",
                "worker",
                "bench.kinds",
                "-p",
                str(processes),
                "-t",
                str(threads),
                "--shutdown-timeout",
                "5",
            ],
            {"TASKCAST_REDIS_URL": redis_url, "TASKCAST_REDIS_PREFIX": PREFIX, **env},
        )
        self._await(child, lambda: client.hexists(LAYOUT.kinds(), "bench.noop"), "workers")
        client.close()
        return child

    # --- baselines --------------------------------------------------------------------------

    def echo(self, reply: bytes) -> tuple[Child, int]:
        """The bare grpc.aio echo server (bench._echo) answering `reply`."""
        port = free_port()
        reply_file = self.tmp / "echo-reply.bin"
        reply_file.write_bytes(reply)
        child = self.spawn(
            "echo",
            [PY, "-m", "bench._echo", "--port", str(port), "--reply-file", str(reply_file)],
        )
        self._await(child, lambda: port_open(port), "echo server")
        return child, port

    def dramatiq_workers(self, redis_url: str, processes: int, threads: int, **env: str) -> Child:
        """Stock `dramatiq bench._dramatiq_app -p N -t T` (default settings)."""
        return self.spawn(
            "dramatiq",
            [
                str(BIN / "dramatiq"),
                "bench._dramatiq_app",
                "--processes",
                str(processes),
                "--threads",
                str(threads),
            ],
            {"BENCH_REDIS_URL": redis_url, **env},
        )

    def celery_workers(
        self, redis_url: str, processes: int, threads: int, app: str = "bench._celery_app"
    ) -> list[Child]:
        """N `celery -A app worker` processes, each with a thread pool of `threads`."""
        out = []
        for i in range(processes):
            out.append(
                self.spawn(
                    f"celery-{i}",
                    [
                        str(BIN / "celery"),
                        "-A",
                        app,
                        "worker",
                        "--pool",
                        "threads",
                        "--concurrency",
                        str(threads),
                        "--loglevel",
                        "WARNING",
                        "-n",
                        f"bench{i}@%h",
                        "--without-gossip",
                        "--without-mingle",
                        "--without-heartbeat",
                    ],
                    {"BENCH_REDIS_URL": redis_url},
                )
            )
        return out

    def seed_api(self, redis_url: str) -> tuple[Child, int]:
        """The seed design's HTTP API (`uvicorn bench._seed_app:api`, one process) on a free
        port; returns once it accepts connections."""
        port = free_port()
        child = self.spawn(
            "seed-api",
            [
                *(PY, "-m", "uvicorn", "bench._seed_app:api", "--host", "127.0.0.1"),
                *("--port", str(port), "--log-level", "warning", "--no-access-log"),
            ],
            {"BENCH_REDIS_URL": redis_url},
        )
        self._await(child, lambda: port_open(port), "seed API")
        return child, port

    def otlp_sink(self) -> int:
        """A silent OTLP/gRPC trace receiver (bench._otlp_sink); returns its port."""
        port = free_port()
        child = self.spawn("otlp-sink", [PY, "-m", "bench._otlp_sink", "--port", str(port)])
        self._await(child, lambda: port_open(port), "OTLP sink")
        return port

    def _await(self, child: Child, check: Callable[[], object], what: str) -> None:
        def ready() -> object:
            if not child.alive():
                raise RuntimeError(f"{what} exited:\n{self.log_tail(child.name)}")
            return check()

        wait_for(ready, 60, what, every=0.05)


def tree_of(*children: Child) -> Callable[[], list[psutil.Process]]:
    """A CpuMeter group: the process trees of these children."""
    return lambda: [p for c in children for p in c.tree()]


def redis_tree(r: RedisProcess) -> Callable[[], list[psutil.Process]]:
    """A CpuMeter group: one redis-server."""
    assert r.proc is not None
    pid = r.proc.pid
    return lambda: [psutil.Process(pid)]


def rss_kib(child: Child) -> float:
    """Resident memory of a child's top process, KiB."""
    return float(psutil.Process(child.proc.pid).memory_info().rss) / 1024


@contextlib.contextmanager
def stack() -> Iterator[Stack]:
    """A Stack that is always closed, even on Ctrl-C."""
    s = Stack()
    try:
        yield s
    finally:
        s.close()
