"""`http.request` in a real worker process against a real local HTTP server."""

from __future__ import annotations

import functools
import json
import threading
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from taskcast.cli.redis_proc import RedisProcess
from taskcast.client import InvalidArgumentError, TaskClient, TaskFailedError, TaskState
from tests.support import WorkerProcess

pytestmark = pytest.mark.usefixtures("http_worker")
CAP = 65536  # the module worker's TASKCAST_HTTP_MAX_BODY_BYTES
BOMB = 256 << 20  # what a bomb inflates to: 256 MiB of "x" from about 250 KB


@functools.cache
def bomb(encoding: str) -> bytes:
    """`BOMB` bytes of "x", compressed: gzip, deflate (zlib-wrapped) or raw deflate."""
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS, "raw": -zlib.MAX_WBITS}
    z = zlib.compressobj(9, zlib.DEFLATED, wbits[encoding])
    block = b"x" * (1 << 20)
    return b"".join(z.compress(block) for _ in range(BOMB >> 20)) + z.flush()


class Handler(BaseHTTPRequestHandler):
    """Routes: /json, /echo, /flaky, /missing, /redirect, /big, /bin, /bomb, /gzip."""

    protocol_version = "HTTP/1.1"
    server: Site

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes, ctype: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.route()

    def do_POST(self) -> None:
        self.route()

    def route(self) -> None:
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.hits.append(self.path)
            self.server.counts[q.get("key", "")] += 1
            count = self.server.counts[q.get("key", "")]
        if url.path == "/json":
            self.reply(200, b'{"hello": "world", "n": [1, 2]}', "application/json")
        elif url.path == "/echo":
            seen = {"method": self.command, "headers": dict(self.headers), "body": body.decode()}
            self.reply(200, json.dumps(seen).encode(), "application/json; charset=utf-8")
        elif url.path == "/flaky" and count <= int(q["times"]):
            self.reply(int(q["status"]), b"try later", "text/plain", Retry_After=q["after"])
        elif url.path == "/flaky":
            self.reply(200, json.dumps({"hits": count}).encode(), "application/json")
        elif url.path == "/redirect":
            self.reply(int(q.get("status", 302)), b"", "text/plain", Location=q["to"])
        elif url.path == "/big":
            self.reply(200, b"x" * int(q["n"]), "text/plain; charset=utf-8")
        elif url.path == "/bin":
            self.reply(200, bytes(range(8)), "application/octet-stream")
        elif url.path == "/bomb":
            encoding = q["enc"].replace("raw", "deflate")
            self.reply(200, bomb(q["enc"]), "text/plain", Content_Encoding=encoding)
        elif url.path == "/gzip":
            z = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            body = z.compress(json.dumps({"hello": "gzip"}).encode()) + z.flush()
            cut = int(q.get("cut", len(body)))
            self.reply(200, body[:cut], "application/json", Content_Encoding="gzip")
        else:
            self.reply(404, b"nothing here", "text/plain")


class Site(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.hits: list[str] = []
        self.counts: Counter[str] = Counter()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """The third-party API, on 127.0.0.1 only."""
    server = Site()
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture(scope="module")
def other_site() -> Iterator[Site]:
    """Another origin (same host, another port), on 127.0.0.1 only."""
    server = Site()
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture(scope="module")
def http_worker(redis_server: RedisProcess, prefix: str) -> Iterator[WorkerProcess]:
    """A worker that may reach the host name `localhost`, and no other non-public address."""
    env = {
        "TASKCAST_HTTP_ALLOW": "localhost",
        "TASKCAST_HTTP_MAX_BODY_BYTES": str(CAP),
        "TASKCAST_HTTP_REDIRECT_KEEP_HEADERS": "X-Keep",
    }
    proc = WorkerProcess(redis_server.url, prefix, extra_env=env).start()
    yield proc
    proc.stop()


def base(site: Site) -> str:
    return f"http://localhost:{site.port}"


def failure(client: TaskClient, payload: dict[str, Any]) -> TaskFailedError:
    handle = client.submit("http.request", payload)
    with pytest.raises(TaskFailedError) as info:
        handle.wait(timeout=30)
    return info.value


def test_get_parses_a_json_body(client: TaskClient, site: Site) -> None:
    result = client.submit("http.request", {"url": f"{base(site)}/json"}).wait(timeout=30)
    assert result["status"] == 200 and result["truncated"] is False
    assert result["body"] == {"hello": "world", "n": [1, 2]}
    assert result["headers"]["content-type"] == "application/json"
    assert result["url"] == f"{base(site)}/json"


def test_post_sends_json_and_headers(client: TaskClient, site: Site) -> None:
    payload = {
        "method": "POST",
        "url": f"{base(site)}/echo",
        "headers": {"X-Token": "t0k"},
        "json": {"a": 1},
    }
    seen = client.submit("http.request", payload).wait(timeout=30)["body"]
    assert seen["method"] == "POST" and json.loads(seen["body"]) == {"a": 1}
    assert seen["headers"]["X-Token"] == "t0k"
    assert seen["headers"]["Content-Type"] == "application/json"


def test_text_body_and_size_cap(client: TaskClient, site: Site) -> None:
    payload = {"method": "POST", "url": f"{base(site)}/echo", "text": "plain words"}
    seen = client.submit("http.request", payload).wait(timeout=30)["body"]
    assert seen["body"] == "plain words" and seen["headers"]["Content-Type"].startswith("text/")
    big = {"url": f"{base(site)}/big?n=5000", "max_body_bytes": 1000}
    result = client.submit("http.request", big).wait(timeout=30)
    assert result["truncated"] is True and result["body"] == "x" * 1000
    binary = client.submit("http.request", {"url": f"{base(site)}/bin"}).wait(timeout=30)
    assert binary["body"] is None and binary["body_base64"] == "AAECAwQFBgc="


@pytest.mark.parametrize("status", [503, 429])
def test_busy_or_failing_server_is_retried_after_retry_after(
    client: TaskClient, site: Site, status: int
) -> None:
    key = uuid.uuid4().hex
    url = f"{base(site)}/flaky?key={key}&times=1&status={status}&after=1"
    handle = client.submit("http.request", {"url": url})
    assert handle.wait(timeout=30)["body"] == {"hits": 2}
    events = list(handle.watch())
    retry = next(e for e in events if e.state is TaskState.RETRYING)
    assert retry.error is not None and f"HTTP {status}" in retry.error.message
    assert retry.time and retry.next_attempt_at
    assert (retry.next_attempt_at - retry.time).total_seconds() >= 0.9  # Retry-After: 1
    assert handle.get().attempt == 2 and site.counts[key] == 2


def test_client_error_fails_without_retry(client: TaskClient, site: Site) -> None:
    key = uuid.uuid4().hex
    error = failure(client, {"url": f"{base(site)}/missing?key={key}"}).error
    assert error is not None and error.type == "UpstreamRejectedError" and not error.retryable
    assert error.message == f"HTTP 404 Not Found from GET {base(site)}/missing: nothing here"
    assert site.counts[key] == 1


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ("127.0.0.1:{port}", "loopback"),
        ("[::ffff:127.0.0.1]:{port}", "loopback"),
        ("169.254.169.254", "a cloud metadata address"),
        ("10.1.2.3", "private"),
    ],
)
def test_non_public_addresses_are_refused_unless_allowed(
    client: TaskClient, site: Site, host: str, why: str
) -> None:
    key = uuid.uuid4().hex
    url = f"http://{host.format(port=site.port)}/json?key={key}"
    info = failure(client, {"url": url})
    assert info.error is not None and info.error.type == "BlockedAddressError"
    assert why in info.error.message and "TASKCAST_HTTP_ALLOW" in info.error.message
    assert info.task.attempt == 1 and site.counts[key] == 0  # never connected


def test_redirects_are_followed_and_checked_at_every_hop(client: TaskClient, site: Site) -> None:
    ok = client.submit("http.request", {"url": f"{base(site)}/redirect?to=/json"}).wait(timeout=30)
    assert ok["status"] == 200 and ok["url"] == f"{base(site)}/json"
    key = uuid.uuid4().hex
    private = f"http://127.0.0.1:{site.port}/json?key={key}"
    info = failure(client, {"url": f"{base(site)}/redirect?to={private}&key=r{key}"})
    assert info.error is not None and info.error.type == "BlockedAddressError"
    assert site.counts[f"r{key}"] == 1 and site.counts[key] == 0
    raw = client.submit(
        "http.request", {"url": f"{base(site)}/redirect?to=/json", "follow_redirects": False}
    ).wait(timeout=30)
    assert raw["status"] == 302 and raw["headers"]["location"] == "/json"


def test_invalid_payload_fails_at_once(client: TaskClient) -> None:
    info = failure(client, {"url": "ftp://example.invalid/x"})
    assert info.error is not None and "only http and https" in info.error.message
    assert info.task.attempt == 1
    # What the payload's schema states is refused at submit (issue 14), nothing queued.
    with pytest.raises(InvalidArgumentError) as refused:
        client.submit("http.request", {"url": "http://localhost/", "method": "BREW"})
    assert "payload_json.method" in dict(refused.value.violations)


def test_redirect_to_another_origin_carries_only_safe_headers(
    client: TaskClient, site: Site, other_site: Site
) -> None:
    sent = {
        "Authorization": "Bearer secret-1",
        "X-Api-Key": "secret-2",
        "Api-Key": "secret-3",
        "Cookie": "s=secret-4",
        "X-Keep": "kept",  # listed in TASKCAST_HTTP_REDIRECT_KEEP_HEADERS
        "Accept": "application/json",
    }
    elsewhere = f"http://localhost:{other_site.port}/echo"
    hop = {"url": f"{base(site)}/redirect?to={elsewhere}", "headers": sent}
    seen = received_headers(client.submit("http.request", hop).wait(timeout=30))
    for name in ("authorization", "x-api-key", "api-key", "cookie"):
        assert name not in seen, name
    assert seen["x-keep"] == "kept" and seen["accept"] == "application/json"
    assert seen["user-agent"] == "taskcast" and other_site.hits[-1] == "/echo"
    same = {"url": f"{base(site)}/redirect?to=/echo", "headers": sent}
    seen = received_headers(client.submit("http.request", same).wait(timeout=30))
    assert seen["x-api-key"] == "secret-2" and seen["authorization"] == "Bearer secret-1"


def received_headers(echoed: dict[str, Any]) -> dict[str, str]:
    """The headers /echo saw, by lower-case name."""
    return {k.lower(): v for k, v in echoed["body"]["headers"].items()}


def test_payload_may_lower_the_body_cap_but_not_raise_it(client: TaskClient, site: Site) -> None:
    url = f"{base(site)}/big?n={CAP * 3}"
    raised = client.submit("http.request", {"url": url, "max_body_bytes": CAP * 100}).wait(30)
    assert raised["truncated"] is True and len(raised["body"]) == CAP
    lowered = client.submit("http.request", {"url": url, "max_body_bytes": 10}).wait(30)
    assert lowered["truncated"] is True and lowered["body"] == "x" * 10


def test_gzip_bodies_are_decoded_and_a_corrupt_one_fails_at_once(
    client: TaskClient, site: Site
) -> None:
    ok = client.submit("http.request", {"url": f"{base(site)}/gzip"}).wait(timeout=30)
    assert ok["body"] == {"hello": "gzip"} and ok["headers"]["content-encoding"] == "gzip"
    error = failure(client, {"url": f"{base(site)}/gzip?cut=12"}).error
    assert error is not None and not error.retryable
    assert error.message.startswith("the response body is not valid gzip")


def peak_rss(worker: WorkerProcess) -> int:
    """The largest resident set (bytes) any of the worker's processes has had (VmHWM)."""
    peaks = []
    for pid in worker.pids():
        with open(f"/proc/{pid}/status") as status:
            line = next(x for x in status if x.startswith("VmHWM:"))
        peaks.append(int(line.split()[1]) * 1024)
    assert peaks, "no worker processes found"
    return max(peaks)


def test_compressed_bombs_are_inflated_only_up_to_the_cap(
    client: TaskClient, site: Site, http_worker: WorkerProcess
) -> None:
    for encoding in ("gzip", "deflate", "raw"):
        bomb(encoding)  # compressed here before the worker's peak is read
    client.submit("http.request", {"url": f"{base(site)}/gzip"}).wait(timeout=30)  # warm
    before = peak_rss(http_worker)
    urls = [
        f"{base(site)}/bomb?enc={e}&n={i}" for i in range(2) for e in ("gzip", "deflate", "raw")
    ]
    handles = [client.submit("http.request", {"url": url}) for url in urls]
    for handle in handles:
        result = handle.wait(timeout=60)
        assert result["truncated"] is True and result["body"] == "x" * CAP
    grown = peak_rss(http_worker) - before
    print(f"worker peak RSS grew by {grown / 2**20:.1f} MiB over {len(urls)} bombs")
    # Each bomb inflates to 256 MiB; inflating one network read whole (as httpx does) costs
    # about 64 MiB per request in flight. Bounded, each costs its cap plus a 64 KiB piece.
    assert grown < 32 << 20
