"""The Redis URL forms, parsed and checked without a network."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from taskcast.core import redisurl
from taskcast.core.redisurl import SentinelURL
from taskcast.core.settings import CommonSettings


def test_sentinel_url_parts() -> None:
    url = "redis+sentinel://:s3cret@127.0.0.1:26379,[::1]:26380/main/3?sentinel_password=sp"
    target = SentinelURL.parse(url)
    assert target.sentinels == (("127.0.0.1", 26379), ("::1", 26380))
    assert target.service == "main"
    assert target.options["db"] == 3 and target.options["password"] == "s3cret"
    assert target.sentinel_password == "sp" and not target.tls
    assert target.sentinel_options()["password"] == "sp"


def test_sentinel_url_defaults_and_tls() -> None:
    target = SentinelURL.parse("rediss+sentinel://127.0.0.1:26379/main?ssl_ca_certs=/ca.pem")
    assert target.options["db"] == 0 and target.tls
    assert target.sentinel_options() == {
        "socket_timeout": redisurl.SENTINEL_TIMEOUT_S,
        "socket_connect_timeout": redisurl.SENTINEL_TIMEOUT_S,
        "retry": None,
        "password": None,
        "ssl": True,
        "ssl_ca_certs": "/ca.pem",
    }


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel:///main/0",  # no sentinel
        "redis+sentinel://127.0.0.1/main/0",  # no port
        "redis+sentinel://127.0.0.1:26379/",  # no service
        "redis+sentinel://127.0.0.1:26379/main/x",  # db not a number
        "redis+sentinel://127.0.0.1:26379/main/0/extra",
        "http://127.0.0.1:6379/0",
    ],
)
def test_bad_urls_are_refused_at_start_up(url: str) -> None:
    with pytest.raises(ValidationError):
        CommonSettings(redis_url=url)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://127.0.0.1:6380/0?ssl_ca_certs=/ca.pem",
        "unix:///tmp/redis.sock?db=0",
        "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/main/0",
    ],
)
def test_accepted_urls(url: str) -> None:
    assert CommonSettings(redis_url=url).redis_url == url


def test_clients_are_built_for_every_form_without_connecting() -> None:
    sentinel = "rediss+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/main/2"
    sync = redisurl.sync_client(sentinel, socket_timeout=1)
    pool = sync.connection_pool
    assert pool.service_name == "main" and pool.connection_kwargs["db"] == 2  # type: ignore[attr-defined]
    assert pool.connection_kwargs["password"] == "pw"
    assert pool.connection_class.__name__ == "SentinelManagedSSLConnection"
    sync.close()
    plain = redisurl.sync_client("rediss://127.0.0.1:1/0")
    assert plain.connection_pool.connection_class.__name__ == "SSLConnection"
    plain.close()


async def test_async_sentinel_pool_blocks_instead_of_failing() -> None:
    client = redisurl.async_client("redis+sentinel://127.0.0.1:1/main/0", pool_size=4)
    assert client.connection_pool.max_connections == 4
    assert hasattr(client.connection_pool, "_condition")  # the blocking pool's wait
    await client.aclose()


def test_passwords_are_redacted_for_logs() -> None:
    assert redisurl.redacted("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert (
        redisurl.redacted("redis+sentinel://u:pw@a:1,b:2/m") == "redis+sentinel://u:***@a:1,b:2/m"
    )
    assert redisurl.redacted("redis://h:1/0") == "redis://h:1/0"


def test_every_client_is_built_here() -> None:
    """No module but core/redisurl.py builds a Redis client: a Sentinel URL would bypass it."""
    from pathlib import Path

    root = Path(redisurl.__file__).resolve().parent.parent
    builders = ("from_url(", "Redis(", "from_pool(", "Sentinel(")
    offenders = [
        str(path.relative_to(root))
        for package in ("core", "server", "worker", "cli")
        for path in (root / package).rglob("*.py")
        if path.name != "redisurl.py" and any(b in path.read_text() for b in builders)
    ]
    assert offenders == []
