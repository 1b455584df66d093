"""Kind payloads checked at submit against the schema workers registered, and ListKinds."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from taskcast.client import AsyncTaskClient, InvalidArgumentError, TaskClient
from taskcast.core.kinds import KindInfo
from taskcast.core.layout import Layout
from taskcast.server.schemas import Validators
from taskcast.v1 import tasks_pb2 as pb
from tests.cli.test_commands import run
from tests.support import eventually

pytestmark = pytest.mark.usefixtures("worker")
LATER = 3600  # seconds: a task accepted at submit that must not run (no model or SMTP server here)


def refused(client: TaskClient, kind: str, payload: Any) -> dict[str, str]:
    """The field violations of a submit that must be INVALID_ARGUMENT."""
    with pytest.raises(InvalidArgumentError) as info:
        client.submit(kind, payload, delay=LATER)
    return dict(info.value.violations)


def test_ai_chat_unknown_key_is_refused_before_anything_is_queued(client: TaskClient) -> None:
    found = refused(client, "ai.chat", {"prompt": "hi", "tool_choice": "auto"})
    assert list(found) == ["payload_json.tool_choice"]
    assert "is not a known field" in found["payload_json.tool_choice"]
    assert "max_completion_tokens" in found["payload_json.tool_choice"]  # the allowlist, named
    assert list(client.list(kind="ai.chat")) == []


@pytest.mark.parametrize(
    ("kind", "payload", "field", "words"),
    [
        ("demo.sleep", {"seconds": "x"}, "payload_json.seconds", "must be number, got string"),
        ("demo.sleep", {"steps": 0}, "payload_json.steps", "less than the minimum of 1"),
        ("ai.chat", {"prompt": "hi", "temperature": 5}, "payload_json.temperature", "maximum"),
        ("ai.chat", {"messages": [{"content": "hi"}]}, "payload_json.messages[0].role", "required"),
        ("http.request", {"method": "GET"}, "payload_json.url", "is required"),
        ("http.request", {"url": "http://127.0.0.1/", "method": "BREW"}, "payload_json.method",
         "must be one of"),
        ("email.send", {"to": 5, "subject": "s"}, "payload_json.to", "must be string or array"),
    ],
)  # fmt: skip
def test_wrong_payloads_of_built_in_kinds_name_the_field(
    client: TaskClient, kind: str, payload: dict[str, Any], field: str, words: str
) -> None:
    found = refused(client, kind, payload)
    assert field in found, found
    assert words in found[field]


def test_built_in_kinds_accept_what_they_always_did(client: TaskClient) -> None:
    accepted: list[tuple[str, dict[str, Any]]] = [
        ("ai.chat", {"prompt": "hi", "seed": 1, "stop": ["\n"], "temperature": 0.5}),
        ("ai.chat", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}),
        ("email.send", {"to": "a@example.test", "subject": "one address, not a list", "text": "x"}),
        ("http.request", {"url": "http://127.0.0.1:9/", "json": {"any": ["thing"]}}),
        ("demo.sleep", {"seconds": 0, "steps": 1, "unknown": "ignored, as before"}),
    ]
    for kind, payload in accepted:
        handle = client.submit(kind, payload, delay=LATER)
        client.cancel(handle.id)


def test_user_kind_model_is_checked_and_handed_to_the_handler(client: TaskClient) -> None:
    found = refused(client, "test.report", {"pages": 0, "tags": ["a", 5], "colour": "red"})
    assert set(found) == {
        "payload_json.title",
        "payload_json.pages",
        "payload_json.tags[1]",
        "payload_json.colour",
    }
    assert found["payload_json.title"] == "is required"
    result = client.submit("test.report", {"title": "Q3", "pages": 2}).wait(timeout=30)
    assert result == {"received": "ReportPayload", "title": "Q3", "pages": 2}


def test_refusals_are_bounded(client: TaskClient) -> None:
    huge = {"title": "x" * 900_000, **{f"extra{i}": i for i in range(500)}}
    with pytest.raises(InvalidArgumentError) as info:
        client.submit("test.report", huge)
    assert 1 <= len(info.value.violations) <= 10
    assert all(len(f) <= 100 and len(d) <= 400 for f, d in info.value.violations)
    assert len(str(info.value)) < 4096


def test_kind_without_model_accepts_any_json_object(client: TaskClient) -> None:
    payload = {"anything": [1, {"goes": None}], "seconds": "x"}
    assert client.submit("test.echo", payload).wait(timeout=30)["payload"] == payload


def test_list_kinds_gives_queue_defaults_schema_and_served(client: TaskClient) -> None:
    kinds = {k.name: k for k in client.kinds()}
    assert list(kinds) == sorted(kinds)
    sleep = kinds["demo.sleep"]
    assert (sleep.queue, sleep.max_attempts, sleep.served) == ("default", 1, True)
    assert sleep.schema is not None and sleep.schema["properties"]["seconds"]["type"] == "number"
    assert sleep.last_seen is not None
    chat = kinds["ai.chat"]
    assert chat.queue == "ai" and chat.schema is not None
    assert chat.schema["additionalProperties"] is False and "seed" in chat.schema["properties"]
    assert kinds["test.report"].schema is not None
    assert kinds["test.report"].schema["required"] == ["title"]
    assert kinds["test.echo"].schema is None


def test_list_kinds_over_grpc_gives_schema_as_json_text(grpc_stub: Any) -> None:
    reply = grpc_stub.ListKinds(pb.ListKindsRequest(), timeout=10)
    by_name = {k.name: k for k in reply.kinds}
    assert json.loads(by_name["test.report"].payload_schema_json)["title"] == "ReportPayload"
    assert by_name["test.echo"].payload_schema_json == ""
    assert by_name["ai.chat"].timeout.ToTimedelta().total_seconds() > 0


async def test_async_client_lists_kinds(grpc_addr: str) -> None:
    async with AsyncTaskClient(grpc_addr) as client:
        assert "demo.sleep" in {k.name for k in await client.kinds()}


def test_records_without_schema_still_read(
    client: TaskClient, rdb: redis.Redis, prefix: str
) -> None:
    # What a worker from before schemas wrote: no "schema"; seen long ago, so not served.
    old = json.dumps({"queue": "default", "max_attempts": 2, "timeout_ms": 5000, "seen": 1})
    rdb.hset(Layout(prefix).kinds(), "test.legacy", old)
    assert KindInfo.from_json(old).schema == ""
    # The server re-reads the kinds hash at most once a second.
    legacy = eventually(
        lambda: next((k for k in client.kinds() if k.name == "test.legacy"), None),
        what="the legacy kind listed",
    )
    assert (legacy.schema, legacy.served, legacy.max_attempts) == (None, False, 2)
    rdb.hdel(Layout(prefix).kinds(), "test.legacy")


def test_validators_are_compiled_once_per_kind_and_schema_version() -> None:
    validators = Validators(size=2)
    v1 = validators.get("k", '{"type":"object"}')
    assert validators.get("k", '{"type":"object"}') is v1
    v2 = validators.get("k", '{"type":"object","required":["a"]}')
    assert v2 is not v1 and v2 is not None
    assert validators.get("k", '{"type": 5}') is None  # a broken schema is not checked
    assert validators.get("k", '{"type":"object"}') is not v1  # the oldest left the cache


def test_cli_kinds_table_and_json(grpc_addr: str) -> None:
    table = run("kinds", server=grpc_addr)
    assert table.returncode == 0, table.stderr
    assert "demo.sleep" in table.stdout and "title*" in table.stdout  # test.report's required
    listed = json.loads(run("kinds", "-o", "json", server=grpc_addr).stdout)
    by_name = {k["name"]: k for k in listed}
    assert by_name["test.report"]["schema"]["required"] == ["title"]
    assert by_name["test.echo"]["schema"] is None and by_name["test.echo"]["served"] is True
    refused = run("submit", "demo.sleep", "--json", '{"seconds": "x"}', server=grpc_addr)
    assert refused.returncode != 0 and "payload_json.seconds" in refused.stderr
