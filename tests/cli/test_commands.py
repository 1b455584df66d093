"""The `taskcast` command as a user runs it: exit codes, output, and `taskcast dev` end to end."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import trustme

from taskcast.cli.redis_proc import answers, free_port
from tests.support import ROOT, command, eventually

TASKCAST = [sys.executable, "-m", "taskcast.cli.main"]


def run(
    *args: str, server: str, timeout: float = 60, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return command(*args, env={"TASKCAST_SERVER": server}, timeout=timeout, stdin=stdin)


@pytest.mark.usefixtures("worker")
def test_submit_watch_prints_the_id_then_every_event_and_exits_0(grpc_addr: str) -> None:
    out = run(
        "submit",
        "demo.sleep",
        "--json",
        '{"seconds": 0.2, "steps": 2}',
        "--watch",
        server=grpc_addr,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines[0]) == 32  # the task id, first
    assert [line.split()[1] for line in lines[1:]] == [
        "PENDING",
        "RUNNING",
        "progress",
        "progress",
        "SUCCEEDED",
    ]
    assert '"steps": 2' in lines[-1]


@pytest.mark.usefixtures("worker")
def test_failing_task_exits_1_and_shows_the_error(grpc_addr: str) -> None:
    out = run(
        "submit",
        "demo.fail",
        "--json",
        '{"fatal": true, "message": "no way"}',
        "--watch",
        server=grpc_addr,
    )
    assert out.returncode == 1
    assert "FAILED" in out.stdout and "NonRetryableError: no way" in out.stdout


@pytest.mark.usefixtures("worker")
def test_retry_runs_a_failed_task_again_and_refuses_a_pending_one(grpc_addr: str) -> None:
    failed = run("submit", "demo.fail", "--json", '{"fatal": true}', "--watch", server=grpc_addr)
    task_id = failed.stdout.splitlines()[0]
    out = run("retry", task_id, "--request-id", "cli-1", server=grpc_addr)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == [task_id, "PENDING"]
    pending = run("submit", "demo.sleep", "--delay", "60", server=grpc_addr).stdout.strip()
    refused = run("retry", pending, server=grpc_addr)
    assert refused.returncode == 4 and "FAILED or CANCELLED" in refused.stderr
    run("cancel", pending, server=grpc_addr)


@pytest.mark.usefixtures("worker")
def test_a_callers_text_prints_as_given_one_line_per_event(grpc_addr: str) -> None:
    """A cancel reason or a label is the caller's text, never rich markup ("[/]" crashed watch,
    submit --watch and ls with MarkupError), and an event stays one line however narrow the
    output (piped, rich wrapped at 80 columns)."""
    label = f"odd=[/]{uuid.uuid4().hex}"
    pending = run("submit", "demo.sleep", "--delay", "60", "-l", label, server=grpc_addr)
    task_id = pending.stdout.strip()
    reason = "[/] [bold]not markup[/bold] " + "x" * 80
    run("cancel", task_id, "--reason", reason, server=grpc_addr)
    narrow = {"TASKCAST_SERVER": grpc_addr, "COLUMNS": "80"}
    out = command("watch", task_id, env=narrow)
    assert out.returncode == 3, out.stderr
    assert out.stdout.splitlines()[-1] == f"#2   CANCELLED ({reason})"
    group = command("watch", "--label", label, "--until-done", env=narrow)
    assert group.returncode == 0, group.stderr
    assert group.stdout.splitlines()[-1] == f"{task_id} #2   CANCELLED ({reason})"
    listed = run("ls", "-l", label, server=grpc_addr)
    assert listed.returncode == 0, listed.stderr
    assert label in listed.stdout


@pytest.mark.usefixtures("worker")
def test_token_prints_a_watch_token_and_refuses_a_ttl_out_of_bounds(grpc_addr: str) -> None:
    pending = run("submit", "demo.sleep", "--delay", "60", server=grpc_addr).stdout.strip()
    out = run("token", pending, "--ttl", "2h", "--cancel", server=grpc_addr)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}\n", out.stdout)
    refused = run("token", pending, "--ttl", "25h", server=grpc_addr)
    assert refused.returncode == 4 and "ttl: must be 1 second to 24 hours" in refused.stderr
    assert run("token", pending, "--ttl", "soon", server=grpc_addr).returncode == 2
    run("cancel", pending, server=grpc_addr)


@pytest.mark.usefixtures("worker")
def test_bad_payload_exits_4_with_the_field(grpc_addr: str) -> None:
    out = run("submit", "demo.sleep", "--json", "[1]", server=grpc_addr)
    assert out.returncode == 4
    assert "payload_json: must be a JSON object, got list" in out.stderr


@pytest.mark.usefixtures("worker")
def test_get_ls_and_stats_as_json(grpc_addr: str) -> None:
    task_id = run(
        "submit", "test.echo", "--json", "{}", "-l", "cli=yes", "--watch", server=grpc_addr
    ).stdout.split()[0]
    got = json.loads(run("get", task_id, server=grpc_addr).stdout)
    assert got["state"] == "SUCCEEDED" and got["labels"] == {"cli": "yes"}
    listed = json.loads(run("ls", "-l", "cli=yes", "-o", "json", server=grpc_addr).stdout)
    assert [t["id"] for t in listed] == [task_id]
    assert "test.echo" in run("stats", server=grpc_addr).stdout


@pytest.mark.usefixtures("worker")
def test_stats_and_watch_print_json_with_o_json(grpc_addr: str) -> None:
    task_id = run(
        "submit", "demo.sleep", "--json", '{"seconds": 0.1, "steps": 2}', server=grpc_addr
    ).stdout.strip()
    out = run("watch", task_id, "-o", "json", server=grpc_addr)
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]  # one object per line
    assert [e["type"] for e in events] == ["state", "state", "progress", "progress", "state"]
    assert [e["sequence"] for e in events] == [1, 2, 3, 4, 5]
    assert events[-1]["state"] == "SUCCEEDED" and events[-1]["result"]["steps"] == 2
    assert "text" not in events[0] and "progress" not in events[0]  # empty fields left out
    stats = run("stats", "-o", "json", server=grpc_addr)
    assert stats.returncode == 0, stats.stderr
    got = json.loads(stats.stdout)
    assert got["watch_streams_open"] == 0
    sleep = next(k for k in got["kinds"] if k["kind"] == "demo.sleep")
    assert sleep["counts"]["SUCCEEDED"] >= 1
    assert any(q["name"] == "default" for q in got["queues"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "k", "--delay", "1e300"], "--delay: '1e300' is not a number of seconds"),
        (["submit", "k", "--timeout", "nan"], "--timeout: 'nan' is not a number of seconds"),
        (["submit", "k", "--max-attempts", "99999999999"], "'99999999999' is out of range"),
        (["submit", "k", "--priority", "x"], "argument --priority: 'x' is not an integer"),
        (["watch", "t", "--after", "1" + "0" * 20], "argument --after: '1" + "0" * 20),
        (["redrive", "--since", "99999999999h"], "--since: '99999999999h' is too long ago"),
        (["redrive", "--until", "3000000d"], "argument --until: '3000000d' is too long ago"),
        (["redrive", "--sample", "99999999999"], "--sample: '99999999999' is out of range"),
        (["token", "t", "--ttl", "1e300h"], "--ttl: not a duration: '1e300h'"),
        (["token", "t", "--ttl", "nan"], "--ttl: not a duration: 'nan'"),
        (["ls", "--state", "bogus"], "argument --state: invalid choice: 'BOGUS'"),
        (["ls", "--limit", "-5"], "argument --limit: '-5' is less than 0"),
    ],
)
def test_a_number_no_request_can_carry_is_a_usage_error(args: list[str], message: str) -> None:
    """Refused before any call (exit 2, argparse's), where protobuf or datetime used to crash
    the command with a traceback."""
    out = run(*args, server="127.0.0.1:9")  # never called
    assert out.returncode == 2, out.stderr
    assert message in out.stderr and "Traceback" not in out.stderr


def test_watch_refuses_flags_of_the_other_kind_of_watch() -> None:
    out = run("watch", "--label", "k=v", "--after", "3", server="127.0.0.1:9")
    assert out.returncode == 1 and "a --label watch resumes by itself" in out.stderr
    out = run("watch", "abc", "--until-done", server="127.0.0.1:9")
    assert out.returncode == 1 and "--until-done goes with --label" in out.stderr


def test_settings_are_validated_with_a_clear_message() -> None:
    out = subprocess.run(
        [*TASKCAST, "server", "--listen", "nonsense", "--max-watchers", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode != 0
    assert "listen (TASKCAST_LISTEN): Value error, must be host:port" in out.stderr
    assert "max_watchers (TASKCAST_MAX_WATCHERS)" in out.stderr


def test_dev_starts_everything_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    redis_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing answers: dev starts its own
    address = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKCAST_")}
    env.update(TASKCAST_REDIS_URL=redis_url, COLUMNS="200")
    # TLS settings left in the shell: dev still serves plaintext on loopback (and says so).
    leaf = trustme.CA().issue_cert("127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    env.update(
        TASKCAST_TLS_CERT=str(tmp_path / "server.pem"),
        TASKCAST_TLS_KEY=str(tmp_path / "server.key"),
    )
    log = tmp_path / "dev.log"
    with log.open("w") as sink:
        dev = subprocess.Popen(
            [*TASKCAST, "dev", "--listen", address, "--data-dir", str(tmp_path / "data")],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
    try:
        eventually(
            lambda: "taskcast is up" in log.read_text() or dev.poll() is not None,
            90,
            "taskcast dev to come up",
        )
        text = log.read_text()
        assert dev.poll() is None, text
        assert "started redis-server on port" in text
        assert "plaintext on loopback: TLS settings ignored" in text
        assert "submit ai.chat" in text and "submit demo.sleep" in text
        match = re.search(r"started redis-server on port (\d+)", text)
        assert match is not None
        own_redis = match.group(1)
        out = run(
            "submit",
            "demo.sleep",
            "--json",
            '{"seconds": 0.1, "steps": 1}',
            "--watch",
            server=address,
        )
        assert out.returncode == 0 and "SUCCEEDED" in out.stdout
        gateway = re.search(r"(http://127\.0\.0\.1:\d+/v1/tasks/)<id>/events", text)
        assert gateway is not None, text
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(gateway.group(1) + "nope", timeout=10)
        assert missing.value.code == 404 and b'"NOT_FOUND"' in missing.value.read()
        os.killpg(dev.pid, signal.SIGINT)  # Ctrl-C in its terminal
        assert dev.wait(60) == 0
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
    assert "stopped." in log.read_text()
    assert not answers(f"redis://127.0.0.1:{own_redis}/0")
    assert run("stats", server=address, timeout=30).returncode == 4  # nobody listens there now
    assert (tmp_path / "data" / "redis" / "appendonlydir").exists()  # AOF persistence on


@pytest.mark.usefixtures("worker")
def test_redrive_dry_run_then_watch_the_operation(grpc_addr: str) -> None:
    label = f"batch=cli-{uuid.uuid4().hex}"
    failed = run(
        "submit", "demo.fail", "--json", '{"fatal": true}', "-l", label, "--watch",
        server=grpc_addr,
    )  # fmt: skip
    task_id = failed.stdout.splitlines()[0]
    flags = ["--state", "failed", "--kind", "demo.fail", "-l", label, "--since", "1h"]
    preview = run("redrive", *flags, "--error-type", "NonRetryableError", "--dry-run",
                  server=grpc_addr)  # fmt: skip
    assert preview.returncode == 0, preview.stderr
    assert preview.stdout.splitlines() == ["1 tasks would be retried", task_id]
    assert "--rate is required" in run("redrive", *flags, server=grpc_addr).stderr
    out = run("redrive", *flags, "--rate", "50", "--watch", server=grpc_addr)
    assert out.returncode == 0, out.stderr
    assert "redriving 1 tasks" in out.stdout and "retried 1, skipped 0 of 1" in out.stdout


def test_watch_says_which_limit_a_task_waits_for(grpc_addr: str) -> None:
    from taskcast.client import TaskClient, TaskState

    key = f"cli-{os.getpid()}"
    with TaskClient(grpc_addr) as client:
        blocker = client.submit(
            "test.block", {"seconds": 60}, concurrency_key=key, concurrency_limit=1
        )
        eventually(lambda: blocker.get().state is TaskState.RUNNING, 20, "the blocker running")
        args = ["submit", "test.echo", "--concurrency-key", key, "--concurrency-limit", "1", "-w"]
        env = {**os.environ, "TASKCAST_SERVER": grpc_addr, "COLUMNS": "200"}
        with subprocess.Popen(
            [*TASKCAST, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(3)]  # id, PENDING, waiting
            blocker.cancel()
            assert proc.wait(60) == 0
    assert lines[2].split()[1:] == [
        "waiting",
        "for",
        "concurrency",
        "limit",
        f"'{key}'",
        "(1",
        "at",
        "once)",
    ]


@pytest.mark.usefixtures("worker")
def test_watch_names_a_token_budget_that_holds_a_task(grpc_addr: str) -> None:
    from taskcast.client import TaskClient

    account = f"cli-tokens-{uuid.uuid4().hex[:8]}"
    with TaskClient(grpc_addr) as client:  # 1,000 a minute, all used: the next one waits
        client.submit("test.tokens_minute", {"account": account, "use": 1000}).wait(timeout=30)
        held = client.submit("test.tokens_minute", {"account": account})
        eventually(lambda: held.get().waiting_for == "tokens", 20, "the task held")
        env = {**os.environ, "TASKCAST_SERVER": grpc_addr, "COLUMNS": "200"}
        with subprocess.Popen(
            [*TASKCAST, "watch", held.id], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stdout is not None
            lines = [proc.stdout.readline() for _ in range(2)]  # PENDING, waiting
            held.cancel()
            assert proc.wait(60) == 3  # cancelled
    assert lines[1].split()[1:] == [
        "waiting",
        "for",
        "token",
        "budget",
        f"'{account}'",
        "(1000/min)",
    ]
