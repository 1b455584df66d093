"""Keep Dramatiq's worker group running: when one of its processes dies (OOM, kill -9, a task that
crashes the interpreter) Dramatiq stops the whole group; we start it again, with backoff.

The group runs in a session of its own, so a terminal's Ctrl-C or a signal to our process group
reaches only us, and Dramatiq gets exactly one SIGTERM from us: its worker processes take a second
SIGTERM as "kill now", which would cut running tasks short.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger("taskcast.worker")
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM us if the supervisor dies (Linux only)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def supervise(argv: list[str], env: dict[str, str], *, restart: bool) -> int:
    """Run `argv` until SIGTERM/SIGINT (passed on once, then waited for); restart it if it dies."""
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
        )  # safe: no threads here yet
        code = child.wait()
        if stopping.is_set() or not restart or code == 0:
            return code
        if time.monotonic() - started > 60:
            delay = 1.0  # it ran a good while: a fresh crash, not a crash loop
        log.error("worker processes exited with %s; restarting in %.0fs", code, delay)
        if stopping.wait(delay):
            return code
        delay = min(delay * 2, 30.0)
