"""TLS and mTLS against the real server: trustme certificates for 127.0.0.1, a real worker.

The module's server (conftest's `grpc_server`, settings overridden here) has TLS and bearer tokens;
a second server on the same loop requires client certificates signed by a CA of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import ValidationError

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import (
    AsyncTaskClient,
    TaskClient,
    TaskState,
    UnauthenticatedError,
    UnavailableError,
)
from taskcast.server.app import Running, create_server
from taskcast.server.config import ServerSettings
from tests.support import ROOT, LoopThread

TOKEN = "tls-test-token"
pytestmark = pytest.mark.usefixtures("worker")


@dataclass(frozen=True)
class Certs:
    """PEM files: the server's CA, chain and key; a client CA, and a client's chain and key."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_ca: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by neither CA
    stranger_key: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A server certificate for 127.0.0.1/localhost and client certificates, from trustme."""
    d = tmp_path_factory.mktemp("tls")
    server_ca, client_ca = trustme.CA(), trustme.CA()
    leaves = {
        "server": server_ca.issue_cert("127.0.0.1", "localhost"),
        "client": client_ca.issue_cert("client.taskcast.test"),
        "stranger": trustme.CA().issue_cert("stranger.taskcast.test"),
    }
    for name, leaf in leaves.items():
        for pem in leaf.cert_chain_pems:
            pem.write_to_path(str(d / f"{name}.pem"), append=True)
        leaf.private_key_pem.write_to_path(str(d / f"{name}.key"))
    server_ca.cert_pem.write_to_path(str(d / "ca.pem"))
    client_ca.cert_pem.write_to_path(str(d / "client-ca.pem"))
    return Certs(
        d / "ca.pem",
        d / "server.pem",
        d / "server.key",
        d / "client-ca.pem",
        d / "client.pem",
        d / "client.key",
        d / "stranger.pem",
        d / "stranger.key",
    )


@pytest.fixture(scope="module")
def server_settings(redis_server: RedisProcess, prefix: str, certs: Certs) -> ServerSettings:
    """The module's server: TLS, and a bearer token on every call."""
    return ServerSettings(
        redis_url=redis_server.url,
        redis_prefix=prefix,
        listen="127.0.0.1:0",
        keepalive=0.3,
        grace=1.0,
        auth_tokens=TOKEN,
        tls_cert=str(certs.server_cert),
        tls_key=str(certs.server_key),
    )


@pytest.fixture(scope="module")
def mtls_addr(
    loop_thread: LoopThread, server_settings: ServerSettings, certs: Certs
) -> Iterator[str]:
    """A second server on the same data that requires a certificate from the client CA."""
    settings = server_settings.model_copy(
        update={"auth_tokens": "", "tls_client_ca": str(certs.client_ca)}
    )
    running: Running = loop_thread.run(create_server(settings))
    yield f"127.0.0.1:{running.port}"
    loop_thread.run(running.stop(0.5))


def test_tls_client_with_the_ca_and_token_submits_and_watches(grpc_addr: str, certs: Certs) -> None:
    with TaskClient(grpc_addr, token=TOKEN, tls_ca=certs.ca, timeout=10) as client:
        handle = client.submit("test.echo", {"over": "tls"})
        events = list(handle.watch(timeout=30))
        assert events[-1].state is TaskState.SUCCEEDED
        assert handle.get().result == {"payload": {"over": "tls"}, "attempt": 1}


def refused(error: type[Exception], address: str, **options: Any) -> str:
    """Call GetStats with these client options, expecting `error`; returns its message."""
    with TaskClient(address, timeout=5, **options) as client, pytest.raises(error) as info:
        client.stats()
    return str(info.value)


def test_tokens_are_still_checked_over_tls(grpc_addr: str, certs: Certs) -> None:
    refused(UnauthenticatedError, grpc_addr, tls_ca=certs.ca)
    refused(UnauthenticatedError, grpc_addr, tls_ca=certs.ca, token="wrong")


def test_plaintext_client_is_refused_by_a_tls_server(grpc_addr: str) -> None:
    refused(UnavailableError, grpc_addr, token=TOKEN, tls=False)


def test_system_roots_do_not_trust_a_private_ca(grpc_addr: str) -> None:
    """`tls=True` verifies the server: a certificate from the test CA fails the handshake."""
    refused(UnavailableError, grpc_addr, token=TOKEN, tls=True)


def test_mtls_refuses_a_client_without_a_certificate(mtls_addr: str, certs: Certs) -> None:
    refused(UnavailableError, mtls_addr, tls_ca=certs.ca)


def test_mtls_refuses_a_certificate_from_another_ca(mtls_addr: str, certs: Certs) -> None:
    refused(
        UnavailableError,
        mtls_addr,
        tls_ca=certs.ca,
        tls_cert=certs.stranger_cert,
        tls_key=certs.stranger_key,
    )


def test_mtls_client_with_a_certificate_submits_and_waits(mtls_addr: str, certs: Certs) -> None:
    with TaskClient(
        mtls_addr, tls_ca=certs.ca, tls_cert=certs.client_cert, tls_key=certs.client_key
    ) as client:
        assert client.submit("test.echo", {"n": 1}).wait(timeout=30)["payload"] == {"n": 1}


async def test_async_client_over_mtls(mtls_addr: str, certs: Certs) -> None:
    async with AsyncTaskClient(
        mtls_addr, tls_ca=certs.ca, tls_cert=certs.client_cert, tls_key=certs.client_key
    ) as client:
        handle = await client.submit("test.async_echo", {"n": 2})
        assert await handle.wait(timeout=30) == {"n": 2}


def test_client_reads_tls_options_from_the_environment(
    mtls_addr: str, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKCAST_TLS_CA", str(certs.ca))
    monkeypatch.setenv("TASKCAST_TLS_CLIENT_CERT", str(certs.client_cert))
    monkeypatch.setenv("TASKCAST_TLS_CLIENT_KEY", str(certs.client_key))
    with TaskClient(mtls_addr) as client:
        assert client.submit("test.async_echo", {"env": 1}).wait(timeout=30) == {"env": 1}


def test_cli_submits_and_watches_over_tls_from_variables(grpc_addr: str, certs: Certs) -> None:
    env = {
        **os.environ,
        "TASKCAST_SERVER": grpc_addr,
        "TASKCAST_TOKEN": TOKEN,
        "TASKCAST_TLS_CA": str(certs.ca),
        "COLUMNS": "200",
    }
    out = subprocess.run(
        [sys.executable, "-m", "taskcast.cli.main", "submit", "test.echo", "-j", "{}", "--watch"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].split()[1] == "SUCCEEDED"


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"tls_cert": "server_cert"}, "tls_cert and tls_key go together"),
        ({"tls_key": "server_key"}, "tls_cert and tls_key go together"),
        ({"tls_cert": "server_cert", "tls_key": "client_key"}, "not the private key of"),
        ({"tls_client_ca": "client_ca"}, "tls_client_ca needs tls_cert"),
        ({"tls_cert": "missing", "tls_key": "server_key"}, "cannot read"),
        ({"tls_cert": "server_cert", "tls_key": "not_pem"}, "not a PEM file"),
    ],
)
def test_server_settings_refuse_incomplete_or_unreadable_tls(
    certs: Certs, given: dict[str, str], says: str
) -> None:
    not_pem = certs.ca.parent / "not.pem"
    not_pem.write_text("hello\n")
    paths = {"missing": certs.ca.parent / "missing.pem", "not_pem": not_pem}
    kwargs = {k: str(paths.get(v) or getattr(certs, v)) for k, v in given.items()}
    with pytest.raises(ValidationError, match=says):
        ServerSettings(**kwargs)  # type: ignore[arg-type]


def test_server_command_names_the_tls_problem_and_its_variable(certs: Certs) -> None:
    env = {**os.environ, "TASKCAST_TLS_KEY": str(certs.server_key)}
    env.pop("TASKCAST_TLS_CERT", None)
    out = subprocess.run(
        [sys.executable, "-m", "taskcast.cli.main", "server", "--tls-cert", "/nonexistent.pem"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert out.returncode != 0
    assert "tls_cert (TASKCAST_TLS_CERT): Value error, cannot read /nonexistent.pem" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"tls_cert": "client_cert"}, "go together"),
        ({"tls": False, "tls_ca": "ca"}, "choose one"),
        ({"tls_ca": "client_key_not_pem"}, "not a PEM file"),
    ],
)
def test_client_refuses_inconsistent_tls_options(
    certs: Certs, kwargs: dict[str, object], says: str
) -> None:
    not_pem = certs.ca.parent / "plain.txt"
    not_pem.write_text("hello\n")
    resolved = {
        k: (
            not_pem if v == "client_key_not_pem" else getattr(certs, v) if isinstance(v, str) else v
        )
        for k, v in kwargs.items()
    }
    with pytest.raises(ValueError, match=says):
        TaskClient("127.0.0.1:1", **resolved)  # type: ignore[arg-type]
