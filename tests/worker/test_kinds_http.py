"""How `http.request` builds each redirect hop."""

from __future__ import annotations

import httpx

from taskcast.worker.kinds.http import _redirect


def hop(status: int, method: str, location: str, body: bytes = b"") -> httpx.Request:
    client = httpx.AsyncClient()
    first = client.build_request(
        method,
        "https://api.example.test/start",
        headers={"Authorization": "Bearer t", "Cookie": "c=1", "X-Keep": "yes"},
        content=body or None,
    )
    return _redirect(client, first, httpx.Response(status, headers={"Location": location}))


def test_same_origin_keeps_credentials_and_resolves_relative_locations() -> None:
    nxt = hop(302, "GET", "/next?page=2")
    assert str(nxt.url) == "https://api.example.test/next?page=2"
    assert nxt.headers["authorization"] == "Bearer t" and nxt.headers["x-keep"] == "yes"
    assert nxt.headers["host"] == "api.example.test"


def test_other_origin_drops_credentials() -> None:
    for location in (
        "https://elsewhere.test/",
        "http://api.example.test/",
        "https://api.example.test:8443/",
    ):
        nxt = hop(302, "GET", location)
        assert "authorization" not in nxt.headers and "cookie" not in nxt.headers
        assert nxt.headers["x-keep"] == "yes"


def test_303_and_a_posts_302_become_get_without_body() -> None:
    for status in (303, 302, 301):
        nxt = hop(status, "POST", "/done", b'{"a": 1}')
        assert nxt.method == "GET" and nxt.content == b""
        assert "content-length" not in nxt.headers


def test_307_and_308_keep_method_and_body() -> None:
    for status in (307, 308):
        nxt = hop(status, "POST", "/again", b"payload")
        assert nxt.method == "POST" and nxt.content == b"payload"
