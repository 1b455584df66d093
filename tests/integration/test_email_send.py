"""`email.send` in a real worker process against a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, cast

import pytest
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import InvalidArgumentError, TaskClient, TaskFailedError, TaskState
from taskcast.core.layout import Layout
from tests.support import WorkerProcess, eventually

USER, PASSWORD = "mailer", f"pw-{uuid.uuid4().hex}"
INJECTED = "=?utf-8?q?hi=0D=0AFrom:_ceo@example.test=0D=0AX-Injected:_1?="
REPLACED = "=?utf-8?q?hi=0D=0A=0D=0Aanother_body?="
SENDER = "Taskcast <noreply@example.test>"
pytestmark = [
    pytest.mark.usefixtures("smtp_worker"),
    # aiosmtpd warns when AUTH is allowed without TLS; this server is on loopback for tests.
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning"),
]


@dataclass
class Mailbox:
    """The SMTP server's behaviour and what it received."""

    port: int = 0
    received: list[EmailMessage] = field(default_factory=list)
    defer: int = 0  # answer this many DATA commands with 451 (try later)
    hold_quit: bool = False  # keep the next QUIT waiting until `release` is set
    quit_seen: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.defer > 0:
            self.defer -= 1
            return "451 4.3.0 mailbox busy, try again later"
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)  # what policy.default builds
        self.received.append(msg)
        return "250 2.0.0 accepted"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        self.quit_seen.set()
        if self.hold_quit:
            self.hold_quit = False
            await asyncio.to_thread(self.release.wait, 60)
        return "221 bye"

    def with_subject(self, subject: str) -> list[EmailMessage]:
        return [m for m in self.received if m["Subject"] == subject]


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    """A real SMTP server on loopback that requires a login."""
    box = Mailbox(port=free_port())
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=box.port,
        auth_required=True,
        auth_require_tls=False,
        authenticator=authenticate,
    )
    controller.start()
    yield box
    box.release.set()
    controller.stop()


@dataclass
class Workers:
    """The module's worker, replaceable by a test that kills it."""

    current: WorkerProcess
    redis_url: str
    prefix: str
    env: dict[str, str]

    def replace(self) -> None:
        self.current.stop()
        self.current = WorkerProcess(self.redis_url, self.prefix, extra_env=self.env).start()


@pytest.fixture(scope="module")
def smtp_worker(redis_server: RedisProcess, prefix: str, mailbox: Mailbox) -> Iterator[Workers]:
    """A real worker sending through the module's SMTP server."""
    env = {
        "TASKCAST_SMTP_HOST": "127.0.0.1",
        "TASKCAST_SMTP_PORT": str(mailbox.port),
        "TASKCAST_SMTP_SECURITY": "none",
        "TASKCAST_SMTP_USERNAME": USER,
        "TASKCAST_SMTP_PASSWORD": PASSWORD,
        "TASKCAST_SMTP_SENDER": SENDER,
    }
    workers = Workers(
        WorkerProcess(redis_server.url, prefix, extra_env=env).start(),
        redis_server.url,
        prefix,
        env,
    )
    yield workers
    workers.current.stop()


def test_delivered_once_with_text_html_cc_and_bcc(client: TaskClient, mailbox: Mailbox) -> None:
    subject = f"hello {uuid.uuid4().hex[:8]}"
    payload = {
        "to": ["Ada <ada@example.test>"],
        "cc": "bob@example.test",
        "bcc": ["audit@example.test"],
        "subject": subject,
        "text": "plain body",
        "html": "<p>html body</p>",
    }
    handle = client.submit("email.send", payload)
    result = handle.wait(timeout=30)
    [msg] = mailbox.with_subject(subject)
    assert result == {
        "message_id": f"<taskcast.{handle.id}@example.test>",
        "accepted": ["ada@example.test", "bob@example.test", "audit@example.test"],
        "refused": {},
    }
    assert msg["Message-ID"] == result["message_id"] and msg["From"] == SENDER
    assert msg["To"] == "Ada <ada@example.test>" and msg["Cc"] == "bob@example.test"
    assert msg["Bcc"] is None  # on the envelope only
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and plain.get_content().strip() == "plain body"
    assert html is not None and "html body" in html.get_content()
    assert handle.get().attempt == 1


def test_deferred_message_is_retried_and_delivered_once(
    client: TaskClient, mailbox: Mailbox
) -> None:
    mailbox.defer = 1
    subject = f"deferred {uuid.uuid4().hex[:8]}"
    handle = client.submit(
        "email.send", {"to": "ada@example.test", "subject": subject, "text": "x"}
    )
    handle.wait(timeout=30)
    retry = next(e for e in handle.watch() if e.state is TaskState.RETRYING)
    assert retry.error is not None and "451" in retry.error.message
    assert len(mailbox.with_subject(subject)) == 1 and handle.get().attempt == 2


def test_exactly_once_when_the_worker_dies_after_acceptance(
    client: TaskClient, mailbox: Mailbox, smtp_worker: Workers, rdb: redis.Redis, prefix: str
) -> None:
    mailbox.quit_seen.clear()
    mailbox.hold_quit = True  # the worker stalls in QUIT, after the server accepted the message
    subject = f"crash {uuid.uuid4().hex[:8]}"
    handle = client.submit(
        "email.send", {"to": "ada@example.test", "subject": subject, "text": "x"}
    )
    eventually(mailbox.quit_seen.is_set, what="the worker to send QUIT")
    assert rdb.exists(Layout(prefix).once(handle.id, "email.send"))  # acceptance is on record
    pids = smtp_worker.current.pids()
    assert pids, "no worker processes found to kill"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    mailbox.release.set()
    smtp_worker.replace()
    result = handle.wait(timeout=60)  # the lease runs out; attempt 2 finds the record
    assert result["message_id"] == f"<taskcast.{handle.id}@example.test>"
    events = list(handle.watch())
    retry = next(e for e in events if e.state is TaskState.RETRYING)
    assert retry.error is not None and retry.error.type == "WorkerLost"
    assert handle.get().attempt == 2
    assert len(mailbox.with_subject(subject)) == 1


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ({"to": "ada@example.test", "subject": "s"}, "give `text`, `html` or both"),
        ({"to": "not an address", "subject": "s", "text": "x"}, "not an email address"),
        ({"to": "a@example.test", "subject": "a\nBcc: x@y", "text": "x"}, "must be one line"),
        # Line breaks hidden in an RFC 2047 encoded word (CVE-2024-6923 on Python < 3.11.10).
        ({"to": "a@example.test", "subject": INJECTED, "text": "x"}, "once its encoded words"),
        ({"to": "a@example.test", "subject": REPLACED, "text": "x"}, "once its encoded words"),
        (
            {
                "to": "=?utf-8?q?Ada=0D=0AX-Injected:_1?= <a@example.test>",
                "subject": "s",
                "text": "x",
            },
            "no encoded words",
        ),
        ({"to": "=?utf-8?q?Ada?= <a@example.test>", "subject": "s", "text": "x"}, "no encoded"),
        (
            {
                "to": "a@example.test",
                "cc": "Ada\u2028X-Injected: 1 <b@example.test>",
                "subject": "s",
                "text": "x",
            },
            "control character",
        ),
        # Shown as two addresses, sent to the first only: refused, not guessed at.
        ({"to": "a@example.test, b@example.test", "subject": "s", "text": "x"}, "one address per"),
        (
            {
                "to": "a@example.test",
                "reply_to": "r@example.test, s@example.test",
                "subject": "s",
                "text": "x",
            },
            "one address per",
        ),
    ],
)
def test_invalid_payload_fails_at_once(
    client: TaskClient, mailbox: Mailbox, payload: dict[str, Any], says: str
) -> None:
    before = len(mailbox.received)
    handle = client.submit("email.send", payload)
    with pytest.raises(TaskFailedError, match=r"invalid email\.send payload") as info:
        handle.wait(timeout=30)
    assert info.value.error is not None and says in info.value.error.message
    assert not info.value.error.retryable and handle.get().attempt == 1
    assert len(mailbox.received) == before  # nothing was sent


def test_payload_the_schema_refuses_is_invalid_argument_at_submit(client: TaskClient) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        client.submit("email.send", {"to": [], "subject": "s", "text": "x"})
    assert "payload_json.to" in dict(info.value.violations)


def test_password_never_stored(client: TaskClient, rdb: redis.Redis, prefix: str) -> None:
    client.submit("email.send", {"to": "a@example.test", "subject": "p", "text": "x"}).wait(30)
    for key in rdb.scan_iter(match=f"{prefix}:*"):
        if rdb.type(key) == b"hash":
            values = cast(dict[bytes, bytes], rdb.hgetall(key)).values()
            assert PASSWORD.encode() not in b"".join(values)
