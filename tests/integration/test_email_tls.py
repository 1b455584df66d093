"""`email.send` over STARTTLS and implicit TLS: real aiosmtpd servers with a trustme certificate.

The STARTTLS server accepts a login only after STARTTLS; every message records whether its
connection was TLS when it arrived. SMTP settings are per process: each test starts its own worker.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from taskcast.cli.redis_proc import RedisProcess, free_port
from taskcast.client import TaskClient, TaskFailedError
from tests.support import WorkerProcess

USER, PASSWORD = "mailer", f"pw-{uuid.uuid4().hex}"
# aiosmtpd warns when AUTH is allowed without STARTTLS; the implicit-TLS server is TLS throughout.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


@dataclass
class Mailbox:
    """What an SMTP server received, and whether each message came over TLS."""

    port: int
    received: list[tuple[str, bool]] = field(default_factory=list)  # (subject line, over TLS)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        subject = next(
            (line for line in envelope.content.decode().splitlines() if line.startswith("Subject")),
            "",
        )
        over_tls = server.transport.get_extra_info("ssl_object") is not None
        self.received.append((subject.removeprefix("Subject: "), over_tls))
        return "250 2.0.0 accepted"


def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    ok = isinstance(data, LoginPassword) and data.login == USER.encode()
    return AuthResult(success=ok and data.password == PASSWORD.encode())


@dataclass(frozen=True)
class Pki:
    """The test CA's PEM file and a server context with its certificate for 127.0.0.1."""

    ca_file: Path
    server: ssl.SSLContext


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("smtp-tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return Pki(path, context)


@pytest.fixture(scope="module")
def starttls_box(pki: Pki) -> Iterator[Mailbox]:
    """An SMTP server that requires STARTTLS before anything else (and before AUTH)."""
    box = Mailbox(free_port())
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=box.port,
        tls_context=pki.server,
        require_starttls=True,
        auth_required=True,
        authenticator=authenticate,
    )
    controller.start()
    yield box
    controller.stop()


@pytest.fixture(scope="module")
def tls_box(pki: Pki) -> Iterator[Mailbox]:
    """An SMTP server that speaks TLS from the first byte (port 465 style)."""
    box = Mailbox(free_port())
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=box.port,
        ssl_context=pki.server,
        auth_required=True,
        # aiosmtpd counts only STARTTLS as TLS for AUTH; this whole connection is TLS (which
        # each message records).
        auth_require_tls=False,
        authenticator=authenticate,
    )
    controller.start()
    yield box
    controller.stop()


@pytest.fixture
def start_worker(redis_server: RedisProcess, prefix: str) -> Iterator[Any]:
    """Starts a worker with the given SMTP settings; stops it after the test."""
    started: list[WorkerProcess] = []

    def start(port: int, security: str, ca_file: Path | None) -> None:
        env = {
            "TASKCAST_SMTP_HOST": "127.0.0.1",
            "TASKCAST_SMTP_PORT": str(port),
            "TASKCAST_SMTP_SECURITY": security,
            "TASKCAST_SMTP_USERNAME": USER,
            "TASKCAST_SMTP_PASSWORD": PASSWORD,
            "TASKCAST_SMTP_SENDER": "Taskcast <noreply@example.test>",
            **({"TASKCAST_SMTP_CA_FILE": str(ca_file)} if ca_file else {}),
        }
        started.append(WorkerProcess(redis_server.url, prefix, extra_env=env).start())

    yield start
    for proc in started:
        proc.stop()


def send(client: TaskClient, subject: str) -> Any:
    payload = {"to": "ada@example.test", "subject": subject, "text": "over tls"}
    return client.submit("email.send", payload).wait(timeout=30)


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_delivered_over_tls_verified_against_the_given_ca(
    client: TaskClient,
    pki: Pki,
    starttls_box: Mailbox,
    tls_box: Mailbox,
    start_worker: Any,
    security: str,
) -> None:
    box = starttls_box if security == "starttls" else tls_box
    start_worker(box.port, security, pki.ca_file)
    subject = f"{security} {uuid.uuid4().hex[:8]}"
    assert send(client, subject)["accepted"] == ["ada@example.test"]
    assert (subject, True) in box.received


def test_an_unknown_ca_fails_the_task_without_sending(
    client: TaskClient, starttls_box: Mailbox, start_worker: Any
) -> None:
    start_worker(starttls_box.port, "starttls", None)  # the system's roots: the test CA is not one
    subject = f"unverified {uuid.uuid4().hex[:8]}"
    with pytest.raises(TaskFailedError, match="certificate failed verification") as info:
        send(client, subject)
    assert info.value.error is not None and not info.value.error.retryable
    assert all(s != subject for s, _ in starttls_box.received)


def test_an_unreadable_ca_file_fails_the_task_at_once(
    client: TaskClient, tls_box: Mailbox, start_worker: Any, tmp_path: Path
) -> None:
    start_worker(tls_box.port, "tls", tmp_path / "missing.pem")
    with pytest.raises(TaskFailedError, match="TASKCAST_SMTP_") as info:
        send(client, f"no ca {uuid.uuid4().hex[:8]}")
    assert info.value.error is not None and "missing.pem" in info.value.error.message
    assert not info.value.error.retryable
