"""The one place a `TASKCAST_REDIS_URL` becomes a redis-py client, sync or asyncio.

Accepted forms:

- `redis://[[user]:password@]host:port/db`, `rediss://...` (TLS; `?ssl_ca_certs=/path/ca.pem`,
  `ssl_certfile`, `ssl_keyfile`, `ssl_cert_reqs` as redis-py reads them) and `unix:///path?db=0`;
- `redis+sentinel://[[user]:password@]host1:26379,host2:26379,host3:26379/service[/db]`, and
  `rediss+sentinel://...` (TLS to the sentinels and to the primary). The password is the
  primary's; sentinels that require one of their own get `?sentinel_password=...`.

A Sentinel client asks the sentinels where the primary is whenever it opens a connection, and
redis-py drops a pool's idle connections when the answer changes, so a failover is followed with
no restart: commands fail (ConnectionError) while the old primary is gone, then succeed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import redis
import redis.asyncio as aredis
import redis.asyncio.sentinel as asentinel
import redis.sentinel as sentinel
from redis.connection import parse_url

PLAIN_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
# Asking a sentinel is a quick local lookup: a sentinel that does not answer within 0.5 s is
# skipped for the next (redis-py tries them in turn), rather than holding up every reconnect.
SENTINEL_TIMEOUT_S = 0.5


@dataclass(frozen=True)
class SentinelURL:
    """A parsed `redis+sentinel://` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    #: Connection options for the primary (db, username, password, ssl_*), as redis-py names them.
    options: dict[str, Any] = field(default_factory=dict)
    sentinel_password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> SentinelURL:
        """Parse `url`; ValueError says what is wrong."""
        parts = urlsplit(url)
        if parts.scheme not in SENTINEL_SCHEMES:
            raise ValueError(f"not a sentinel URL (scheme {parts.scheme!r})")
        hosts = parts.netloc.rpartition("@")[2]
        sentinels = tuple(_host_port(h) for h in hosts.split(",") if h)
        if not sentinels:
            raise ValueError("names no sentinel (host:port[,host:port...])")
        path = [p for p in parts.path.split("/") if p]
        if not 1 <= len(path) <= 2 or (len(path) == 2 and not path[1].isdigit()):
            raise ValueError("path must be /<service_name> or /<service_name>/<db>")
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        sentinel_password = query.pop("sentinel_password", None)
        tls = parts.scheme.startswith("rediss")
        userinfo = parts.netloc.rpartition("@")[0]
        # redis-py parses the rest (credentials, db, ssl_* and socket options) as for one host.
        plain = f"{'rediss' if tls else 'redis'}://{userinfo + '@' if userinfo else ''}sentinel"
        plain += f"/{path[1] if len(path) == 2 else 0}?{urlencode(query)}"
        options: dict[str, Any] = parse_url(plain)  # type: ignore[no-untyped-call]
        for key in ("host", "port", "connection_class"):
            options.pop(key, None)
        return cls(sentinels, unquote(path[0]), options, sentinel_password, tls)

    def sentinel_options(self, **options: Any) -> dict[str, Any]:
        """Options for the connections to the sentinels themselves."""
        out: dict[str, Any] = {
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
            "retry": None,  # the next sentinel is the retry
            "password": self.sentinel_password,
        }
        if self.tls:
            ssl = {k: v for k, v in {**self.options, **options}.items() if k.startswith("ssl_")}
            out.update(ssl=True, **ssl)
        return out


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"sentinel {text!r} must be host:port")
    return host.strip("[]"), int(port)


def check(url: str) -> str:
    """`url` if it is one of the accepted forms; ValueError otherwise."""
    scheme = urlsplit(url).scheme
    if scheme in SENTINEL_SCHEMES:
        SentinelURL.parse(url)
    elif scheme not in PLAIN_SCHEMES:
        raise ValueError(
            "must start with redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://"
        )
    return url


def redacted(url: str) -> str:
    """`url` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, hosts = parts.netloc.rpartition("@")[::2]
    user = quote(parts.username or "")
    return parts._replace(netloc=f"{user}:***@{hosts}" if userinfo else hosts).geturl()


def sync_client(url: str, **options: Any) -> redis.Redis:
    """A blocking client for `url` (any accepted form) with redis-py connection `options`."""
    if urlsplit(url).scheme not in SENTINEL_SCHEMES:
        return redis.Redis.from_url(url, **options)
    target = SentinelURL.parse(url)
    # redis-py's sentinel module is untyped; master_for returns a redis.Redis.
    manager = sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=target.sentinel_options(**options)
    )
    kwargs = {"ssl": target.tls, **target.options, **options}
    client = manager.master_for(  # type: ignore[no-untyped-call]
        target.service, redis_class=_SentinelRedis, **kwargs
    )
    return cast("redis.Redis", client)


class _SentinelRedis(redis.Redis):
    """A primary's client that also closes its connections to the sentinels."""

    def close(self) -> None:
        """Close the pool, then the sentinel clients (redis-py leaves those open)."""
        super().close()
        for client in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            client.close()


class _AsyncSentinelRedis(aredis.Redis):
    """An asyncio primary's client that also closes its connections to the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the pool, then the sentinel clients (redis-py leaves those open)."""
        await super().aclose(close_connection_pool)
        for client in self.connection_pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
            await client.aclose()


class _BlockingSentinelPool(asentinel.SentinelConnectionPool, aredis.BlockingConnectionPool):
    """A Sentinel pool that waits for a free connection instead of failing past its size."""


def async_client(
    url: str, *, pool_size: int | None = None, pool_timeout: float = 5.0, **options: Any
) -> aredis.Redis:
    """An asyncio client for `url` (any accepted form) with redis-py connection `options`.

    With `pool_size`, a command waits up to `pool_timeout` for one of that many connections
    (redis-py's default pool fails with "Too many connections" instead).
    """
    blocking = {} if pool_size is None else {"max_connections": pool_size, "timeout": pool_timeout}
    if urlsplit(url).scheme not in SENTINEL_SCHEMES:
        if pool_size is None:
            return aredis.Redis.from_url(url, **options)
        pool = aredis.BlockingConnectionPool.from_url(url, **blocking, **options)
        return aredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it
    target = SentinelURL.parse(url)
    manager = asentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=target.sentinel_options(**options)
    )
    pool_class = asentinel.SentinelConnectionPool if pool_size is None else _BlockingSentinelPool
    kwargs = {"ssl": target.tls, **blocking, **target.options, **options}
    client = manager.master_for(
        target.service,
        redis_class=_AsyncSentinelRedis,
        connection_pool_class=pool_class,
        **kwargs,
    )
    return cast("aredis.Redis", client)
