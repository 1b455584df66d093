"""`taskcast redrive`: retry the failed (or cancelled) tasks a filter selects, at a set pace."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

from taskcast.cli.numbers import integer

_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def when(text: str) -> dt.datetime:
    """A time given as an age ("90s", "30m", "1h", "2d": that long ago) or as ISO 8601 (a time
    without an offset is UTC)."""
    if m := _AGO.fullmatch(text.strip()):
        try:
            age = dt.timedelta(seconds=float(m[1]) * _UNIT_S[m[2]])
            return dt.datetime.now(dt.UTC) - age
        except OverflowError:  # before the year 1: no time to send
            raise argparse.ArgumentTypeError(f"{text!r} is too long ago") from None
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an age (90s, 30m, 1h, 2d) nor an ISO 8601 time"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)


def add(sub: Callable[[str, str], argparse.ArgumentParser], fn: Callable[..., int]) -> None:
    """The `redrive` subcommand, made by `sub(name, help)` (the client commands' parser)."""
    p = sub("redrive", "retry the FAILED/CANCELLED tasks a filter selects, at most --rate a second")
    p.add_argument(
        "--state",
        action="append",
        choices=("failed", "cancelled"),
        help="repeat for both (default: both)",
    )
    p.add_argument("--kind")
    p.add_argument("--error-type", help="the error's type, exactly (e.g. RuntimeError)")
    p.add_argument("--label", "-l", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--since", type=when, help="finished at or after: an age (1h) or ISO time")
    p.add_argument("--until", type=when, help="finished before: an age (10m) or ISO time")
    p.add_argument("--rate", type=float, help="retries per second, 0.1 to 10000 (required)")
    p.add_argument("--dry-run", action="store_true", help="only count and show a sample")
    p.add_argument("--sample", type=integer(32), help="ids a dry run shows, 1 to 100 (default 10)")
    p.add_argument("--request-id", help="sending the same one again starts one operation")
    p.add_argument("--watch", "-w", action="store_true", help="follow the operation until it ends")
    p.set_defaults(fn=fn)


def run(client: Any, args: argparse.Namespace, labels: dict[str, str]) -> Any:
    """Send the request; the client's `Redrive`."""
    if not args.dry_run and args.rate is None:
        raise SystemExit("--rate is required (retries per second), unless --dry-run")
    return client.redrive(
        states=[s.upper() for s in args.state or ()],
        kind=args.kind,
        labels=labels,
        error_type=args.error_type,
        finished_after=args.since,
        finished_before=args.until,
        max_per_second=args.rate,
        dry_run=args.dry_run,
        sample_size=args.sample,
        request_id=args.request_id,
    )


def describe(result: Any, as_json: bool) -> str:
    """The answer as a line (or JSON): the count, and the sample or the operation's id."""
    op = result.operation
    if as_json:
        return json.dumps(
            {
                "count": result.count,
                "truncated": result.truncated,
                "sample_task_ids": result.sample_task_ids,
                "operation_id": op.id if op else None,
                "created": result.created,
            }
        )
    more = " (truncated: more matched; run again afterwards)" if result.truncated else ""
    if op is None:
        return "\n".join([f"{result.count} tasks would be retried{more}", *result.sample_task_ids])
    again = "" if result.created else " (already started by this request id)"
    return f"{op.id} redriving {result.count} tasks{more}{again}"
