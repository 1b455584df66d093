"""Keep Dramatiq's worker group running: when one of its processes dies (OOM, kill -9, a task that
crashes the interpreter) Dramatiq stops the whole group; we start it again, with backoff.

The group runs in a session of its own, so a terminal's Ctrl-C or a signal to our process group
reaches only us, and Dramatiq gets exactly one SIGTERM from us: its worker processes take a second
SIGTERM as "kill now", which would cut running tasks short.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("taskcast.worker")
_PR_SET_PDEATHSIG = 1


# Looked up here, not in the child: with the metrics thread running, a forked child must not
# take the dynamic loader's lock, which that thread might have held at the fork.
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM us if the supervisor dies (Linux only)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Metrics:
    """The worker processes' /metrics, served from the supervisor (it outlives their restarts).

    Each worker process writes its samples to files in `directory` (Prometheus multiprocess
    mode); a scrape sums them. One port per `taskcast worker`, however many processes it runs.
    """

    def __init__(self, host: str, port: int, directory: str) -> None:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        self.directory = directory
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        self.httpd, self.thread = start_http_server(port, host, registry)
        log.info("worker metrics on http://%s:%d/metrics", host, self.httpd.server_port)

    def forget_live_gauges(self) -> None:
        """The group died: its processes' gauges (slots, threads) no longer count."""
        for path in glob.glob(os.path.join(self.directory, "gauge_live*.db")):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def close(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()


def supervise(
    argv: list[str], env: dict[str, str], *, restart: bool, metrics: Metrics | None = None
) -> int:
    """Run `argv` until SIGTERM/SIGINT (passed on once, then waited for); restart it if it dies.

    With `metrics`, serve the group's metrics until the end.
    """
    try:
        return _run(argv, env, restart=restart, metrics=metrics)
    finally:
        if metrics is not None:
            metrics.close()


def _run(argv: list[str], env: dict[str, str], *, restart: bool, metrics: Metrics | None) -> int:
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def forward(_signum: int, _frame: object) -> None:
        if stopping.is_set():
            return
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    delay = 1.0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(
            argv, env=env, start_new_session=True, preexec_fn=_die_with_parent
        )  # safe with the metrics thread: the child only calls prctl, looked up beforehand
        code = child.wait()
        if metrics is not None:
            metrics.forget_live_gauges()
        if stopping.is_set() or not restart or code == 0:
            return code
        if time.monotonic() - started > 60:
            delay = 1.0  # it ran a good while: a fresh crash, not a crash loop
        log.error("worker processes exited with %s; restarting in %.0fs", code, delay)
        if stopping.wait(delay):
            return code
        delay = min(delay * 2, 30.0)
