"""`http.request`: one call to a third-party HTTP API, safe by default (see `_guard`).

Redirects are followed here, hop by hop, so each hop's connection is checked, and a hop to another
origin carries only the headers known to be safe (no credentials, whatever their name). Bodies are
read, and inflated, against a cap (see `_body`). 429 and 5xx answers and connection failures are
retried (honouring Retry-After); other 4xx answers fail the task at once.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import ssl
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskcast.worker.context import TaskContext
from taskcast.worker.errors import NonRetryableError
from taskcast.worker.kinds._body import ACCEPT_ENCODING, read_capped
from taskcast.worker.kinds._guard import AddressPolicy, GuardedTransport
from taskcast.worker.kinds._upstream import (
    UpstreamRejectedError,
    UpstreamUnavailableError,
    retry_after,
    shorten,
)
from taskcast.worker.registry import task

SELECTED_HEADERS = (
    "content-type",
    "content-length",
    "content-encoding",
    "etag",
    "last-modified",
    "cache-control",
    "location",
    "retry-after",
)
#: The only request headers carried across a redirect to another origin (plus the operator's
#: `TASKCAST_HTTP_REDIRECT_KEEP_HEADERS`): an API key travels under any name (X-Api-Key,
#: Api-Key, ...), so credentials are told apart by allowing what is known safe, not by a list.
SAFE_ON_REDIRECT = frozenset(
    (
        "accept",
        "accept-encoding",
        "accept-language",
        "content-language",
        "content-type",
        "user-agent",
    )
)
TEXT_TYPES = ("text/", "application/xml", "application/javascript", "application/x-www-form")


class HTTPSettings(BaseSettings):
    """What `http.request` may do on this worker (`TASKCAST_HTTP_*` variables)."""

    model_config = SettingsConfigDict(env_prefix="TASKCAST_HTTP_", frozen=True, extra="ignore")

    allow: str = Field("", description="non-public hosts and CIDRs requests may reach")
    max_body_bytes: int = Field(
        1 << 20, ge=0, description="largest response body kept (a payload may only lower it)"
    )
    max_redirects: int = Field(5, ge=0, description="redirects followed per request")
    redirect_keep_headers: str = Field(
        "", description="more request headers carried on a redirect to another origin"
    )
    user_agent: str = Field("taskcast", description="User-Agent unless a request sets one")

    @property
    def keep_on_redirect(self) -> frozenset[str]:
        """Request headers (lower case) a redirect to another origin carries."""
        extra = self.redirect_keep_headers.replace(",", " ").split()
        return SAFE_ON_REDIRECT | {name.lower() for name in extra}


class HTTPPayload(BaseModel):
    """An `http.request` payload."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    url: str
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(None, alias="json")
    text: str | None = None
    timeout: float = Field(30.0, gt=0, le=3600)
    follow_redirects: bool = True
    max_body_bytes: int | None = Field(None, ge=0)
    response_headers: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class _Runtime:
    settings: HTTPSettings
    policy: AddressPolicy
    ssl_context: ssl.SSLContext


@functools.cache
def _runtime() -> _Runtime:
    """This process's settings, built by the first task."""
    try:
        settings = HTTPSettings()
    except ValidationError as exc:
        raise NonRetryableError(f"invalid TASKCAST_HTTP_* settings: {exc}") from None
    return _Runtime(settings, AddressPolicy.parse(settings.allow), httpx.create_ssl_context())


@task("http.request", queue="http", max_attempts=5, payload=HTTPPayload)
async def request(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Make the request; return status, selected headers and the (capped, parsed) body."""
    rt = _runtime()
    try:
        p = HTTPPayload.model_validate(payload)
    except ValidationError as exc:
        raise NonRetryableError(f"invalid http.request payload: {exc}") from None
    if "json_body" in p.model_fields_set and p.text is not None:
        raise NonRetryableError("invalid http.request payload: give `json` or `text`, not both")
    # A client per task: no cookies or connections shared between callers' requests.
    client = httpx.AsyncClient(
        transport=GuardedTransport(rt.policy, rt.ssl_context),
        timeout=p.timeout,
        trust_env=False,
        headers={"User-Agent": rt.settings.user_agent, "Accept-Encoding": ACCEPT_ENCODING},
    )
    try:
        async with client, asyncio.timeout(p.timeout):
            return await _exchange(client, _first(client, p), p, rt.settings)
    except TimeoutError:
        raise UpstreamUnavailableError(f"no complete answer within {p.timeout:g}s", 0) from None
    except httpx.TimeoutException as exc:
        raise UpstreamUnavailableError(f"timed out: {exc or type(exc).__name__}", 0) from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.LocalProtocolError) as exc:
        raise NonRetryableError(f"cannot send this request: {exc}") from None
    except httpx.TransportError as exc:
        cause = shorten(str(exc) or type(exc).__name__, 200)
        raise UpstreamUnavailableError(f"connection failed: {cause}", 0) from None


def _first(client: httpx.AsyncClient, p: HTTPPayload) -> httpx.Request:
    if "json_body" in p.model_fields_set:
        return client.build_request(p.method, p.url, headers=p.headers, json=p.json_body)
    headers = dict(p.headers)
    if p.text is not None and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "text/plain; charset=utf-8"
    content = None if p.text is None else p.text.encode()
    return client.build_request(p.method, p.url, headers=headers, content=content)


async def _exchange(
    client: httpx.AsyncClient, req: httpx.Request, p: HTTPPayload, settings: HTTPSettings
) -> dict[str, Any]:
    # The payload may lower the operator's cap, never raise it: a 60 MB body once became an
    # 84 MB result, stored and published whole. Above it, the body is cut (`truncated`) as usual.
    cap = settings.max_body_bytes
    if p.max_body_bytes is not None:
        cap = min(cap, p.max_body_bytes)
    for _ in range(settings.max_redirects + 1):
        if req.url.scheme not in ("http", "https"):
            raise NonRetryableError(f"only http and https URLs are allowed, not {_show(req)}")
        response = await client.send(req, stream=True)
        try:
            if p.follow_redirects and response.has_redirect_location:
                req = _redirect(client, req, response, settings.keep_on_redirect)
                continue
            data, truncated = await read_capped(response, cap)
        finally:
            await response.aclose()
        _check(req, response, data)
        return _result(response, data, truncated, p.response_headers)
    raise NonRetryableError(f"more than {settings.max_redirects} redirects, last to {_show(req)}")


def _redirect(
    client: httpx.AsyncClient,
    req: httpx.Request,
    res: httpx.Response,
    keep: frozenset[str] = SAFE_ON_REDIRECT,
) -> httpx.Request:
    """The next hop, as browsers and httpx build it: 303 (and a POST's 301/302) become a GET.

    A hop to another origin carries only the headers in `keep`.
    """
    url = req.url.join(res.headers["location"])
    method, content = req.method, req.content
    headers = httpx.Headers(req.headers)
    to_get = res.status_code in (301, 302) and method == "POST"
    if to_get or (res.status_code == 303 and method != "HEAD"):
        method, content = "GET", b""
        for name in ("content-type", "content-length", "transfer-encoding"):
            headers.pop(name, None)
    if (url.scheme, url.host, url.port) != (req.url.scheme, req.url.host, req.url.port):
        headers = httpx.Headers([(k, v) for k, v in headers.raw if k.decode().lower() in keep])
    headers.pop("host", None)
    return client.build_request(method, url, headers=headers, content=content or None)


def _check(req: httpx.Request, response: httpx.Response, data: bytes) -> None:
    status = response.status_code
    if status < 400:
        return
    said = shorten(data.decode(response.encoding or "utf-8", "replace"), 200)
    what = f"HTTP {status} {response.reason_phrase} from {_show(req)}" + (
        f": {said}" if said else ""
    )
    if status == 429 or status >= 500:
        delay = retry_after(response.headers)
        asked = f" (Retry-After {delay:g}s)" if delay is not None else ""
        raise UpstreamUnavailableError(what + asked, delay or 0)
    raise UpstreamRejectedError(what)


def _result(
    response: httpx.Response, data: bytes, truncated: bool, wanted: list[str]
) -> dict[str, Any]:
    names = {*SELECTED_HEADERS, *(w.lower() for w in wanted)}
    headers = {k: v for k, v in response.headers.items() if k in names}
    content_type = response.headers.get("content-type", "").lower()
    ctype = content_type.split(";")[0].strip()
    out: dict[str, Any] = {
        "status": response.status_code,
        "url": str(_clean(response.url)),
        "headers": headers,
        "truncated": truncated,
    }
    text = data.decode(response.encoding or "utf-8", "replace")
    if (ctype == "application/json" or ctype.endswith("+json")) and not truncated:
        try:
            out["body"] = json.loads(data)
            return out
        except ValueError:
            pass  # said JSON, is not: hand it over as text
    if ctype.startswith(TEXT_TYPES) or "json" in ctype or "charset=" in content_type:
        out["body"] = text
    elif data:
        out["body"], out["body_base64"] = None, base64.b64encode(data).decode()
    else:
        out["body"] = ""
    return out


def _clean(url: httpx.URL) -> httpx.URL:
    """`url` without credentials, query or fragment (they may hold keys)."""
    return url.copy_with(userinfo=b"", query=None, fragment=None)


def _show(req: httpx.Request) -> str:
    """Method and URL for messages."""
    return f"{req.method} {_clean(req.url)}"
