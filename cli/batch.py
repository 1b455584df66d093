"""Many tasks at once: `taskcast submit KIND --jsonl FILE` (SubmitTasks) and `taskcast watch
--label KEY=VALUE` (WatchTasks).

`submit --jsonl`: one task per line, submitted in batches.
Each non-blank line is a JSON object: the task's payload, or the per-line form
`{"payload": {...}, "labels": {...}, "idempotency_key": "...", ...}`. A line is the per-line form
when it has a `payload` key holding an object and every other key is one of `LINE_KEYS`;
anything else is the payload itself (wrap a payload that looks like the per-line form in
`{"payload": ...}`). A line that is not JSON is sent as it is, and the server's error for it is
printed like any other item's. The command's own options apply to every line; a line's labels
are added to `--label`'s, and `--idempotency-key K` gives line n the key `K-n`, so running the
same file again submits nothing twice.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

import grpc
from google.rpc import error_details_pb2

from taskcast.cli.numbers import fits, fits_seconds
from taskcast.client import InvalidArgumentError, RpcError, TaskHandle, TaskSpec

LINE_KEYS = frozenset(
    {"payload", "labels", "idempotency_key", "queue", "delay", "max_attempts", "timeout"}
)

Line = TaskSpec | RpcError  # a line's task, or why it cannot be sent
CHUNK = 1_000  # lines read, submitted (SubmitTasks' most per call) and printed at a time


def submit_file(client: Any, args: Any, common: dict[str, Any]) -> int:
    """Submit the lines of `args.jsonl` ("-": stdin) `CHUNK` at a time, printing each one's
    outcome as its chunk is answered (a file of millions of lines is never held whole); how
    many failed. SystemExit naming the file when it cannot be read (the lines before that
    point were submitted, and their ids printed)."""
    failed = 0
    try:
        with _open(args.jsonl) as f:
            lines = (line.rstrip("\n") for line in f)
            numbered = specs(args.kind, lines, common, args.idempotency_key)
            while chunk := list(itertools.islice(numbered, CHUNK)):
                sent = iter(client.submit_many([s for _, s in chunk if isinstance(s, TaskSpec)]))
                results = [next(sent) if isinstance(s, TaskSpec) else s for _, s in chunk]
                failed += report([n for n, _ in chunk], results, args.output == "json", sys.stdout)
                sys.stdout.flush()
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(_unreadable(args.jsonl, exc)) from None
    return failed


def _open(path: str) -> contextlib.AbstractContextManager[IO[str]]:
    """`path` as UTF-8 text, or stdin for "-" (left open when the command ends)."""
    if path == "-":
        return contextlib.nullcontext(sys.stdin)
    return open(path, encoding="utf-8")


def _unreadable(path: str, exc: BaseException) -> str:
    return f"cannot read {path!r}: {getattr(exc, 'strerror', None) or exc}"


def read_text(path: str) -> str:
    """The UTF-8 text of `path` ("-": stdin); SystemExit naming the file when it cannot be read."""
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SystemExit(_unreadable(path, exc)) from None


def specs(
    kind: str, lines: Iterable[str], common: dict[str, Any], key: str | None
) -> Iterator[tuple[int, Line]]:
    """(line number, its task or its error) for each non-blank line."""
    for number, line in enumerate(lines, 1):
        if line.strip():
            yield number, _spec(kind, line, common, f"{key}-{number}" if key else None)


def _spec(kind: str, line: str, common: dict[str, Any], key: str | None) -> Line:
    options = {**common, "idempotency_key": key}
    try:
        value = json.loads(line)
    except ValueError:
        return TaskSpec(kind, line.strip(), **options)  # the server says what is wrong with it
    if not _per_line(value):
        return TaskSpec(kind, line.strip(), **options)
    if (problem := _problem(value)) is not None:
        return _invalid(*problem)
    labels = {**(common.get("labels") or {}), **(value.get("labels") or {})}
    return TaskSpec(kind, **{**options, **value, "labels": labels})


def _problem(value: dict[str, Any]) -> tuple[str, str] | None:
    """The first per-line field a request cannot carry (a wrong JSON type, or out of any range),
    as (field, description); None when each can be sent (the server checks the values)."""
    labels = value.get("labels")
    if labels is not None and not (
        isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())
    ):
        return "labels", "must be an object of strings"
    for name in ("idempotency_key", "queue"):
        if value.get(name) is not None and not isinstance(value[name], str):
            return name, "must be a string"
    attempts = value.get("max_attempts")
    if attempts is not None and (type(attempts) is not int or not fits(32, attempts)):
        return "max_attempts", "must be an integer (1 to 100; 0: the kind's default)"
    for name in ("delay", "timeout"):
        v = value.get(name)
        if v is None:
            continue
        number = isinstance(v, int | float) and not isinstance(v, bool)
        if not number or not fits_seconds(v):
            return name, "must be a number of seconds"
    return None


def _invalid(field: str, description: str) -> InvalidArgumentError:
    """A line's own error, shaped as the server's INVALID_ARGUMENT for one field."""
    violation = error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
    detail = error_details_pb2.BadRequest(field_violations=[violation])
    return InvalidArgumentError(
        grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {description}", [detail]
    )


def _per_line(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("payload"), dict)
        and set(value) <= LINE_KEYS
    )


def report(
    numbers: list[int], results: list[TaskHandle | RpcError], as_json: bool, out: IO[str]
) -> int:
    """Print one line per item (its id, or its error); the number of items that failed."""
    failed = 0
    for number, result in zip(numbers, results, strict=True):
        if isinstance(result, RpcError):
            failed += 1
            out.write(_error_line(number, result, as_json) + "\n")
        elif as_json:
            out.write(json.dumps({"line": number, "id": result.id}) + "\n")
        else:
            out.write(f"{result.id}\n")
    return failed


def _error_line(number: int, err: RpcError, as_json: bool) -> str:
    if as_json:
        violations = [{"field": f, "description": d} for f, d in err.violations]
        return json.dumps(
            {
                "line": number,
                "error": {"code": err.code.name, "message": err.message, "violations": violations},
            }
        )
    return f"error: line {number}: {err}"


def follow_group(client: Any, label: str, until_done: bool, as_json: bool) -> int:
    """Print every event of the group, one line each (`-o json`: one object per line), until
    interrupted, or with `until_done` until every task of the group has ended."""
    from taskcast.cli import show

    with client.watch_group(label, end_when_done=until_done) as events:
        for event in events:
            if as_json:
                show.console.out(event.to_json(), highlight=False)
            elif event.type == "output":
                show.console.out(f"{event.task_id} #{event.sequence} output {event.text!r}")
            elif (line := show.event_line(event)) is not None:
                show.console.print(f"{event.task_id} {line}", soft_wrap=True)  # one line each
    return 0
