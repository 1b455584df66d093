"""The `taskcast` command: server, worker, dev, submit, watch, get, cancel, retry, redrive, ls,
stats, kinds, token."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from taskcast.cli import extras, redrive
from taskcast.cli.numbers import integer, seconds

EXIT_FAILED, EXIT_CANCELLED, EXIT_ERROR = 1, 3, 4


def _server(args: argparse.Namespace) -> int:
    import asyncio

    from taskcast.cli import flags
    from taskcast.core import logs
    from taskcast.server.app import serve
    from taskcast.server.config import ServerSettings

    settings = flags.build(ServerSettings, args)
    logs.use_format(settings.log_format)
    try:  # about 10% less server CPU per call where it installs (not on Windows)
        import uvloop
    except ImportError:
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from taskcast.cli import flags
    from taskcast.cli.supervise import supervise
    from taskcast.core import logs
    from taskcast.core.calls import REDRIVE_QUEUE
    from taskcast.worker.settings import WorkerSettings

    settings = flags.build(WorkerSettings, args)
    logs.use_format(settings.log_format)  # the supervisor's lines; each process sets its own
    # Read by dramatiq.worker at import: the longest idle pause between polls of a queue.
    env = flags.environ_with(
        settings,
        {
            "dramatiq_worker_timeout": settings.poll_interval_ms,
            "TASKCAST_LOG_LEVEL": args.log_level,
        },
    )
    argv = [sys.executable, "-m", "dramatiq", "taskcast.worker.boot:setup", *args.modules]
    argv += ["--processes", str(args.processes), "--threads", str(args.threads)]
    argv += ["--worker-shutdown-timeout", str(int(settings.shutdown_timeout * 1000))]
    if args.queues:  # built-in operations (RedriveTasks) must run on every worker
        argv += ["--queues", *dict.fromkeys([*args.queues, REDRIVE_QUEUE])]
    if not settings.metrics_port:
        return supervise(argv, env, restart=args.restart)
    import shutil
    import tempfile

    from taskcast.cli.supervise import Metrics

    # Prometheus multiprocess mode: each worker process writes its samples here, and the
    # supervisor serves their sum; fresh per run, so no stale process's files are counted.
    directory = tempfile.mkdtemp(prefix="taskcast-metrics-")
    env["PROMETHEUS_MULTIPROC_DIR"] = directory
    try:
        metrics = Metrics(settings.metrics_host, settings.metrics_port, directory)
        return supervise(argv, env, restart=args.restart, metrics=metrics)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _client(args: argparse.Namespace) -> Any:
    from taskcast.client import TaskClient

    return TaskClient(args.server)


def _labels(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            sys.exit(f"--label takes key=value, got {pair!r}")
        out[key] = value
    return out


def _follow(client: Any, task_id: str, after: int, as_json: bool) -> int:
    from taskcast.cli import show

    in_output, final = False, None
    with client.watch(task_id, after) as events:
        for event in events:
            in_output = show.print_event(event, as_json=as_json, in_output=in_output)
            if event.terminal:
                final = event.state.value
    if in_output:
        show.console.out("")
    return {"SUCCEEDED": 0, "FAILED": EXIT_FAILED, "CANCELLED": EXIT_CANCELLED}.get(final or "", 0)


def _submit_lines(args: argparse.Namespace) -> int:
    from taskcast.cli import batch

    if args.watch or args.json or args.payload_file:
        sys.exit("--jsonl takes the payloads from its lines: no --json, --payload-file or --watch")
    common = {
        "queue": args.queue,
        "labels": _labels(args.label),
        "delay": args.delay,
        "max_attempts": args.max_attempts,
        "timeout": args.timeout,
        "priority": args.priority,
        "fairness_key": args.fairness_key,
    }
    with _client(args) as client:
        failed = batch.submit_file(client, args, common)
    return EXIT_ERROR if failed else 0


def _submit(args: argparse.Namespace) -> int:
    from taskcast.cli import show

    if args.jsonl:
        return _submit_lines(args)
    payload = args.json
    if args.payload_file:
        from taskcast.cli import batch

        payload = batch.read_text(args.payload_file)
    with _client(args) as client:
        handle = client.submit(
            args.kind,
            payload or "{}",
            queue=args.queue,
            labels=_labels(args.label),
            delay=args.delay,
            max_attempts=args.max_attempts,
            timeout=args.timeout,
            idempotency_key=args.idempotency_key,
            concurrency_key=args.concurrency_key,
            concurrency_limit=args.concurrency_limit,
            priority=args.priority,
            fairness_key=args.fairness_key,
        )
        if args.output == "json" and not args.watch:
            show.console.print_json(json.dumps(show.task_dict(handle.task)))
        else:
            show.console.print(f"[bold]{handle.id}[/]")
        return _follow(client, handle.id, 0, args.output == "json") if args.watch else 0


def _watch(args: argparse.Namespace) -> int:
    if (args.task_id is None) == (args.label is None):
        sys.exit("watch takes a TASK_ID or --label KEY=VALUE (one of them)")
    if args.label is not None and args.after:
        sys.exit("--after is a TASK_ID's sequence; a --label watch resumes by itself")
    if args.label is None and args.until_done:
        sys.exit("--until-done goes with --label (a TASK_ID's watch ends with the task)")
    with _client(args) as client:
        if args.label is not None:
            from taskcast.cli import batch

            return batch.follow_group(client, args.label, args.until_done, args.output == "json")
        return _follow(client, args.task_id, args.after, args.output == "json")


def _get(args: argparse.Namespace) -> int:
    from taskcast.cli import show

    with _client(args) as client:
        show.console.print_json(json.dumps(show.task_dict(client.get(args.task_id))))
    return 0


def _token(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(client.watch_token(args.task_id, ttl=args.ttl, cancel=args.cancel))
    return 0


def _lifetime(text: str) -> float:
    """`90`, `90s`, `15m` or `2h` as seconds (finite, and within what a Duration holds)."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1)
    try:
        return seconds(str(float(number) * unit))
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (e.g. 90, 90s, 15m, 2h)"
        ) from None


def _cancel(args: argparse.Namespace) -> int:
    from taskcast.cli import show

    with _client(args) as client:
        task = client.cancel(args.task_id, args.reason)
    show.console.print(
        f"{task.id} {task.state.value}"
        + (" (cancel requested; the handler is stopping)" if task.cancel_requested else "")
    )
    return 0


def _retry(args: argparse.Namespace) -> int:
    from taskcast.cli import show

    with _client(args) as client:
        task = client.retry(args.task_id, args.request_id)
    show.console.print(f"{task.id} {task.state.value} (attempts so far {task.attempt})")
    return 0


def _redrive(args: argparse.Namespace) -> int:
    from taskcast.cli import redrive, show

    with _client(args) as client:
        result = redrive.run(client, args, _labels(args.label))
        as_json = args.output == "json"
        if not (as_json and args.watch):
            show.console.out(redrive.describe(result, as_json))
        if args.watch and result.operation is not None:
            return _follow(client, result.operation.id, 0, as_json)
    return 0


def _ls(args: argparse.Namespace) -> int:
    from taskcast.cli import show

    with _client(args) as client:
        tasks = list(
            client.list(
                state=args.state,
                kind=args.kind,
                labels=_labels(args.label),
                limit=args.limit,
                include_payloads=args.payloads,
            )
        )
    if args.output == "json":
        rows = [show.task_dict(t) for t in tasks]
        if not args.payloads:  # not sent by the server: leave them out rather than show {}
            rows = [{k: v for k, v in r.items() if k not in ("payload", "result")} for r in rows]
        show.console.print_json(json.dumps(rows))
    else:
        show.console.print(show.tasks_table(tasks))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from taskcast.cli import show

    with _client(args) as client:
        stats = client.stats()
    if args.output == "json":
        show.console.print_json(json.dumps(show.stats_dict(stats)))
        return 0
    for table in show.stats_tables(stats):
        show.console.print(table)
    show.console.print(f"tenant: {stats.tenant} (queues and workers are shared by all tenants)")
    if stats.limits:
        show.console.print(show.limits_table(stats))
    show.console.print(f"watch streams open on this server: {stats.watch_streams_open}")
    return 0


def _kinds(args: argparse.Namespace) -> int:
    from taskcast.cli import show

    with _client(args) as client:
        kinds = client.kinds()
    if args.output == "json":
        show.console.print_json(json.dumps([show.kind_dict(k) for k in kinds]))
    else:
        show.console.print(show.kinds_table(kinds))
    return 0


def _dev(args: argparse.Namespace) -> int:
    from taskcast.cli.dev import run

    return run(args)


def _settings_flags(p: argparse.ArgumentParser, command: str) -> None:
    """The settings flags of a command whose extra is installed (they come from its models)."""
    from taskcast.cli import flags

    if command == "worker":
        from taskcast.worker.settings import WorkerSettings

        flags.add(p, WorkerSettings)
    else:
        from taskcast.server.config import ServerSettings

        flags.add(p, ServerSettings)


def _help(command: str, text: str) -> str:
    """A subcommand's help, naming its extra when that is not installed."""
    wanted, name = extras.NEEDS[command]
    return text if extras.installed(*wanted) else f"{text} (install taskcast[{name}])"


def parser() -> argparse.ArgumentParser:
    """The whole command line (settings flags only for the commands whose extras are installed)."""
    top = argparse.ArgumentParser(prog="taskcast", description="Slow work over gRPC, watched live.")
    top.add_argument("--log-level", default=os.environ.get("TASKCAST_LOG_LEVEL", "INFO"))
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("server", help=_help("server", "run the gRPC server"))
    if extras.installed("server"):
        _settings_flags(p, "server")
    p.set_defaults(fn=_server)

    p = sub.add_parser(
        "worker", help=_help("worker", "run worker processes for the built-in kinds and MODULES")
    )
    p.add_argument("modules", nargs="*", metavar="MODULE", help="modules with @task kinds to serve")
    p.add_argument("--processes", "-p", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--threads",
        "-t",
        type=int,
        default=8,
        help="threads per process, for sync kinds (default 8)",
    )
    p.add_argument(
        "--queues",
        "-Q",
        nargs="*",
        help="consume only these queues (default: all); the built-in queue taskcast always",
    )
    p.add_argument(
        "--restart",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start the worker processes again when one dies, e.g. of OOM (default: on)",
    )
    if extras.installed("worker"):
        _settings_flags(p, "worker")
    p.set_defaults(fn=_worker)

    p = sub.add_parser(
        "dev", help=_help("dev", "run Redis, the server and a worker on this machine")
    )
    p.add_argument("modules", nargs="*", metavar="MODULE", help="extra modules with @task kinds")
    p.add_argument("--data-dir", default=".taskcast", help="where a Redis started here keeps data")
    if extras.installed("server"):
        _settings_flags(p, "server")
    p.set_defaults(fn=_dev)

    def client_parser(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument(
            "--server",
            default=None,
            help="server address [TASKCAST_SERVER, default 127.0.0.1:50051]",
        )
        p.add_argument("--output", "-o", choices=("text", "json"), default="text")
        return p

    p = client_parser("submit", "submit a task and print its id (with --watch, its events)")
    p.add_argument("kind")
    p.add_argument("--json", "-j", help="the payload, a JSON object")
    p.add_argument("--payload-file", help="read the payload from a file")
    p.add_argument(
        "--jsonl",
        metavar="FILE",
        help="one task per line of FILE ('-': stdin), submitted in batches; prints one line per "
        "task, its id or its error (exit 4 when any failed). A line is the payload, or "
        '{"payload": {...}, "labels": {...}, "idempotency_key": ...}; --idempotency-key K '
        "gives line n the key K-n",
    )
    p.add_argument("--queue")
    p.add_argument("--label", "-l", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--delay", type=seconds, help="seconds before the first attempt")
    p.add_argument("--max-attempts", type=integer(32))
    p.add_argument("--timeout", type=seconds, help="time limit of one attempt, seconds")
    p.add_argument("--idempotency-key")
    p.add_argument(
        "--concurrency-key",
        help="with --concurrency-limit: run at most N attempts naming it at once",
    )
    p.add_argument("--concurrency-limit", type=integer(32), metavar="N")
    p.add_argument(
        "--priority", type=integer(32), metavar="1-5", help="1 starts first, 5 last (default 3)"
    )
    p.add_argument(
        "--fairness-key", metavar="KEY", help="share your tasks' starts round-robin among keys"
    )
    p.add_argument("--watch", "-w", action="store_true", help="follow its events until it ends")
    p.set_defaults(fn=_submit)

    p = client_parser(
        "watch", "follow a task's events until it ends, or (--label) every task of a group"
    )
    p.add_argument("task_id", nargs="?")
    p.add_argument("--after", type=integer(64), default=0, help="skip events up to this sequence")
    p.add_argument(
        "--label",
        metavar="KEY=VALUE",
        help="watch every task with this label, one line per event prefixed by its task id, "
        "until interrupted (Ctrl-C)",
    )
    p.add_argument(
        "--until-done", action="store_true", help="with --label: end once every task has ended"
    )
    p.set_defaults(fn=_watch)

    p = client_parser("get", "print a task as JSON")
    p.add_argument("task_id")
    p.set_defaults(fn=_get)

    p = client_parser("cancel", "cancel a task")
    p.add_argument("task_id")
    p.add_argument("--reason", default="")
    p.set_defaults(fn=_cancel)

    p = client_parser(
        "token", "print a watch token: lets a browser watch one task through the HTTP gateway"
    )
    p.add_argument("task_id")
    p.add_argument("--ttl", type=_lifetime, default=900.0, help="lifetime: 90s, 15m, 2h (15m)")
    p.add_argument("--cancel", action="store_true", help="the token may also cancel the task")
    p.set_defaults(fn=_token)

    p = client_parser("retry", "run a FAILED or CANCELLED task again (same id, same events)")
    p.add_argument("task_id")
    p.add_argument("--request-id", help="sending the same one again does not run it twice")
    p.set_defaults(fn=_retry)

    redrive.add(client_parser, _redrive)

    p = client_parser("ls", "list tasks, newest first")
    states = ("PENDING", "RUNNING", "RETRYING", "SUCCEEDED", "FAILED", "CANCELLED")
    p.add_argument("--state", type=str.upper, choices=states)  # an unknown one crashed the call
    p.add_argument("--kind")
    p.add_argument("--label", "-l", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--limit", type=integer(32, least=0), default=20)
    p.add_argument("--payloads", action="store_true", help="include payloads and results")
    p.set_defaults(fn=_ls)

    p = client_parser("stats", "queue depths and per-kind counts")
    p.set_defaults(fn=_stats)

    p = client_parser("kinds", "the kinds workers serve: queue, defaults, payload schema")
    p.set_defaults(fn=_kinds)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    top = parser()
    # Known arguments first: a command without its extra has no settings flags to match, and
    # should say which extra to install rather than that `--listen` is unrecognized.
    args, unknown = top.parse_known_args(argv)
    extras.require(args.command)
    if unknown:
        top.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from taskcast.client import RpcError, TaskcastError

    try:
        return int(args.fn(args))
    except RpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for field, desc in exc.violations:
            print(f"  {field}: {desc}", file=sys.stderr)
        return EXIT_ERROR
    except TaskcastError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
