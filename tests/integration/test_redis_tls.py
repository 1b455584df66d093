"""`rediss://`: server and worker speak to Redis over TLS only (trustme certificates)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme

from taskcast.cli.redis_proc import RedisProcess, free_port
from taskcast.client import TaskClient
from taskcast.server.config import ServerSettings
from tests.support import WorkerProcess


class TLSRedis:
    """A redis-server with a TLS port beside its plain one (the plain one is only for start-up's
    readiness check); clients are given the TLS port alone."""

    def __init__(self, base: Path) -> None:
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1")
        base.mkdir(parents=True, exist_ok=True)
        self.ca_file, cert, key = base / "ca.pem", base / "cert.pem", base / "key.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        self.tls_port = free_port()
        tls = {
            "--tls-port": str(self.tls_port),
            "--tls-cert-file": str(cert),
            "--tls-key-file": str(key),
            "--tls-ca-cert-file": str(self.ca_file),
            "--tls-auth-clients": "no",
        }
        args = tuple(x for pair in tls.items() for x in pair)
        self.proc = RedisProcess(base / "data", extra_args=args).start()

    @property
    def url(self) -> str:
        """The rediss:// URL, trusting only the test CA."""
        return f"rediss://127.0.0.1:{self.tls_port}/0?ssl_ca_certs={self.ca_file}"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSRedis]:
    """The module's own TLS Redis."""
    r = TLSRedis(tmp_path_factory.mktemp("redis-tls"))
    yield r
    r.proc.stop()


@pytest.fixture(scope="module")
def server_settings(tls_redis: TLSRedis, prefix: str) -> ServerSettings:
    """The module's server on the rediss:// URL."""
    return ServerSettings(
        redis_url=tls_redis.url, redis_prefix=prefix, listen="127.0.0.1:0", grace=1.0
    )


def test_the_tls_port_refuses_plaintext(tls_redis: TLSRedis) -> None:
    plain = redis.Redis.from_url(f"redis://127.0.0.1:{tls_redis.tls_port}/0", retry=None)
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    plain.close()


def test_tasks_run_over_tls(tls_redis: TLSRedis, client: TaskClient, prefix: str) -> None:
    worker = WorkerProcess(tls_redis.url, prefix).start()
    try:
        handle = client.submit("test.echo", {"over": "tls"})
        assert handle.wait(timeout=30)["payload"] == {"over": "tls"}
        assert [e.state for e in handle.watch() if e.state is not None][-1].terminal
    finally:
        worker.stop()
