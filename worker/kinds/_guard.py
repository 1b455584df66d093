"""Outbound HTTP that cannot reach private networks: checked where the connection is made.

Every TCP connection `http.request` opens goes through `GuardedBackend.connect_tcp`, which resolves
the host itself, refuses loopback, private, link-local (cloud metadata), multicast and otherwise
non-public addresses unless `AddressPolicy` allows them, and then connects to the very address it
checked. So the check holds after DNS resolution (no second lookup to rebind), for every redirect
hop, and for every new connection of a keep-alive pool. TLS still verifies the host name.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import anyio
import httpcore
import httpx

from taskcast.worker.errors import NonRetryableError

__all__ = ["AddressPolicy", "BlockedAddressError", "GuardedBackend", "GuardedTransport"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class BlockedAddressError(NonRetryableError):
    """The destination resolved to an address this worker may not connect to."""


def _unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped or NAT64 IPv6 address, else `ip` itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def non_public(ip: IPAddress) -> str | None:
    """Why `ip` is not a public internet address ("loopback", ...), or None when it is."""
    ip = _unwrap(ip)
    if ip in METADATA:
        return "a cloud metadata address"
    for flag in ("loopback", "link_local", "private", "multicast", "unspecified", "reserved"):
        if getattr(ip, f"is_{flag}"):
            return flag.replace("_", "-")
    return None if ip.is_global else "not a public address"


class AddressPolicy:
    """Which non-public destinations are allowed: host names and networks (CIDRs or addresses)."""

    def __init__(self, hosts: Iterable[str] = (), networks: Iterable[IPNetwork] = ()) -> None:
        self.hosts = frozenset(h.lower().rstrip(".") for h in hosts)
        self.networks = tuple(networks)

    @classmethod
    def parse(cls, text: str) -> AddressPolicy:
        """From `TASKCAST_HTTP_ALLOW`: comma- or space-separated host names and CIDRs."""
        hosts, networks = [], []
        for entry in text.replace(",", " ").split():
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.append(entry)
        return cls(hosts, networks)

    def refusal(self, host: str, ip: IPAddress) -> str | None:
        """Why connecting to `ip` (resolved from `host`) is refused, or None when it is allowed."""
        if host.lower().rstrip(".") in self.hosts:
            return None
        if any(a in net for net in self.networks for a in {ip, _unwrap(ip)}):
            return None
        return non_public(ip)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that checks each destination address before connecting."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve; refuse if any address is disallowed; connect to the first that answers."""
        addresses = [host] if _literal(host) else await _resolve(host, port, timeout)
        for address in addresses:
            why = self.policy.refusal(host, ipaddress.ip_address(address.partition("%")[0]))
            if why is not None:
                target = host if host == address else f"{host} ({address})"
                raise BlockedAddressError(
                    f"refused to connect to {target}: {why}; a worker reaches such addresses "
                    "only when its TASKCAST_HTTP_ALLOW lists the host or network"
                )
        error: Exception = httpcore.ConnectError(f"{host} resolved to no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        """Never: a local socket is the most private address there is."""
        raise BlockedAddressError("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        """Sleep, as the wrapped backend does."""
        await self._inner.sleep(seconds)


def _literal(host: str) -> bool:
    """Whether `host` is an IP address already (asyncio's own connect skips resolving those)."""
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True


async def _resolve(host: str, port: int, timeout: float | None) -> list[str]:
    """The addresses `host` resolves to, in order, without repeats.

    Only names are resolved: getaddrinfo runs on the loop's thread pool even for an address,
    and that hop was 67 us of CPU per connection (5% of a whole loopback GET's), for nothing.
    """
    try:
        with anyio.fail_after(timeout):
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError as exc:
        raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
    except OSError as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _translated(request: httpx.Request) -> Iterator[None]:
    """The one place httpcore's exceptions become httpx's (most specific first)."""
    try:
        yield
    except tuple(src for src, _ in _ERRORS) as exc:
        dst = next(d for s, d in _ERRORS if isinstance(exc, s))
        raise dst(str(exc), request=request) from exc


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: Any, request: httpx.Request) -> None:
        self._stream, self._request = stream, request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _translated(self._request):
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        await self._stream.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore pool whose every connection is guarded."""

    def __init__(self, policy: AddressPolicy, ssl_context: ssl.SSLContext) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, network_backend=GuardedBackend(policy), max_connections=20
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` through the pool (no proxies, no environment: nothing bypasses it)."""
        url = request.url
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _translated(request):
            reply = await self._pool.handle_async_request(core)
        return httpx.Response(
            reply.status,
            headers=reply.headers,
            stream=_Body(reply.stream, request),
            extensions=reply.extensions,
        )

    async def aclose(self) -> None:
        """Close every pooled connection."""
        await self._pool.aclose()
