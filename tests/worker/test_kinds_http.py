"""How `http.request` builds each redirect hop."""

from __future__ import annotations

import httpx

from taskcast.worker.kinds.http import SAFE_ON_REDIRECT, HTTPSettings, _redirect

SENT = {
    "Authorization": "Bearer t",
    "Cookie": "c=1",
    "X-Api-Key": "k1",
    "Api-Key": "k2",
    "X-Keep": "yes",
    "Accept": "application/json",
    "Accept-Language": "fr",
    "User-Agent": "mine/1",
}


def hop(
    status: int,
    method: str,
    location: str,
    body: bytes = b"",
    keep: frozenset[str] = SAFE_ON_REDIRECT,
) -> httpx.Request:
    client = httpx.AsyncClient()
    first = client.build_request(
        method, "https://api.example.test/start", headers=SENT, content=body or None
    )
    response = httpx.Response(status, headers={"Location": location})
    return _redirect(client, first, response, keep)


def test_same_origin_keeps_credentials_and_resolves_relative_locations() -> None:
    nxt = hop(302, "GET", "/next?page=2")
    assert str(nxt.url) == "https://api.example.test/next?page=2"
    assert nxt.headers["authorization"] == "Bearer t" and nxt.headers["x-keep"] == "yes"
    assert nxt.headers["host"] == "api.example.test"


def test_other_origin_carries_only_safe_headers() -> None:
    for location in (
        "https://elsewhere.test/",
        "http://api.example.test/",
        "https://api.example.test:8443/",
    ):
        nxt = hop(302, "GET", location)
        for name in ("authorization", "cookie", "x-api-key", "api-key", "x-keep"):
            assert name not in nxt.headers, name
        assert nxt.headers["accept"] == "application/json" and nxt.headers["user-agent"] == "mine/1"
        assert nxt.headers["accept-language"] == "fr"
        assert nxt.headers["host"] == location.split("/")[2]


def test_the_operator_may_keep_more_headers_across_origins() -> None:
    keep = HTTPSettings(redirect_keep_headers="X-Keep, x-other").keep_on_redirect
    assert keep == SAFE_ON_REDIRECT | {"x-keep", "x-other"}
    nxt = hop(307, "POST", "https://elsewhere.test/", b"{}", keep)
    assert nxt.headers["x-keep"] == "yes" and "x-api-key" not in nxt.headers
    assert nxt.method == "POST" and nxt.content == b"{}"


def test_303_and_a_posts_302_become_get_without_body() -> None:
    for status in (303, 302, 301):
        nxt = hop(status, "POST", "/done", b'{"a": 1}')
        assert nxt.method == "GET" and nxt.content == b""
        assert "content-length" not in nxt.headers


def test_307_and_308_keep_method_and_body() -> None:
    for status in (307, 308):
        nxt = hop(status, "POST", "/again", b"payload")
        assert nxt.method == "POST" and nxt.content == b"payload"
