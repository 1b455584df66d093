"""examples/fastapi in a real browser: ask, watch the answer stream in, reload, cancel, close.

Every part is real: the session's redis-server, the server with its HTTP gateway, a worker whose
`ai.chat` calls the stand-in model server at RATE tokens/s, the example app under uvicorn (a
child process that creates its client at import time, as FastAPI apps do), and the system
Chromium driven by Playwright. The page is on the app's origin and reads the gateway on another
port, as a deployment without a shared reverse proxy would, so CORS is exercised too.

Each test asks its own question, so each answer is known exactly (`reply_text`) and the stand-in's
record of each model request can be told apart.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from taskcast.cli.llm_standin import StandIn, Step, reply_text
from taskcast.cli.redis_proc import RedisProcess, free_port
from taskcast.client import TaskClient, TaskState
from taskcast.server.app import Running
from taskcast.server.config import ServerSettings
from tests.support import ROOT, STARTED, WorkerProcess, eventually, settings_for

BACKEND_TOKEN = f"backend-{uuid.uuid4().hex}"  # the app's full-access token, never the page's
RATE = 20.0  # tokens/s: one event per token (the worker writes at most one per 50 ms)
TOKENS = 60  # 3 s per answer: time to reload, cancel or close mid-stream
MODEL = "web"  # the worker's default model: the app's payloads name none
KEEPALIVE = 15.0  # seconds, the default
STORAGE_KEY = "taskcast-example-task"  # where the page keeps its task (index.html)
# The brief's flags: no first-run, sync, update or other traffic off loopback.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Every text the answer box shows, in order, each change once (installed before the page runs).
RECORD_ANSWERS = """
window.__answers = [];
new MutationObserver(() => {
  const text = document.getElementById("answer")?.textContent;
  if (text && text !== window.__answers.at(-1)) window.__answers.push(text);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture(scope="module")
def chromium() -> str:
    """The system Chromium; its absence fails the tests with the fix (`make test` installs it)."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "no `chromium` on PATH: the browser tests drive the system Chromium. `make test` "
            "installs it when run as root on Debian or Ubuntu; otherwise run "
            "`sudo apt-get install chromium` (or your system's package) and try again"
        )
    return path


@pytest.fixture(scope="module")
def app_socket() -> Iterator[socket.socket]:
    """The app's listening socket, made first: the gateway must know the page's origin."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield sock


@pytest.fixture(scope="module")
def app_url(app_socket: socket.socket) -> str:
    """The example app's origin."""
    return f"http://127.0.0.1:{app_socket.getsockname()[1]}"


@pytest.fixture(scope="module")
def server_settings(redis_server: RedisProcess, prefix: str, app_url: str) -> ServerSettings:
    """The conftest's settings plus tokens (so the page can only use its watch token), the
    gateway, open to the app's origin, and the default 15 s between keep-alives (so a slot freed
    sooner on an idle stream was freed by the disconnect, not by a failed keep-alive write)."""
    return settings_for(
        redis_server,
        prefix,
        keepalive=KEEPALIVE,
        auth_tokens=BACKEND_TOKEN,
        http_port=free_port(),
        http_cors_origins=app_url,
    )


@pytest.fixture(scope="module")
def client(grpc_addr: str) -> Iterator[TaskClient]:
    """The conftest's client, with the backend's token."""
    with TaskClient(grpc_addr, reconnect_for=20, token=BACKEND_TOKEN) as c:
        yield c


@pytest.fixture(scope="module")
def llm() -> Iterator[StandIn]:
    """The stand-in model server, streaming slowly enough to act mid-answer."""
    with StandIn(rate=RATE, tokens=TOKENS) as server:
        yield server


@pytest.fixture(scope="module")
def ai_worker(
    redis_server: RedisProcess, prefix: str, llm: StandIn
) -> Iterator[Future[WorkerProcess]]:
    """A real worker whose `ai.chat` calls the stand-in. It boots in the background while the
    server, the app and the browser start (seconds each on a busy machine); `page` waits."""
    env = {
        "TASKCAST_AI_BASE_URL": llm.url,
        "TASKCAST_AI_API_KEY": "sk-example",
        "TASKCAST_AI_MODEL": MODEL,
    }
    proc = WorkerProcess(redis_server.url, prefix, extra_env=env)
    with ThreadPoolExecutor(1, thread_name_prefix="worker-boot") as pool:
        booted = pool.submit(proc.start)
        try:
            yield booted
        finally:
            with contextlib.suppress(Exception):  # a failed boot was reported by `page`
                booted.result(60)
            proc.stop()


@pytest.fixture(scope="module")
def webapp(
    app_socket: socket.socket, app_url: str, grpc_addr: str, grpc_server: Running
) -> Iterator[str]:
    """`uvicorn app:app` from examples/fastapi on the app's socket; its origin."""
    env = {
        **os.environ,
        "TASKCAST_SERVER": grpc_addr,
        "TASKCAST_TOKEN": BACKEND_TOKEN,
        "GATEWAY_URL": f"http://127.0.0.1:{grpc_server.http_port}",
    }
    fd = app_socket.fileno()
    args = [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", "examples/fastapi"]
    proc = subprocess.Popen(
        [*args, "--fd", str(fd), "--log-level", "warning"],
        env=env,
        cwd=ROOT,
        pass_fds=[fd],
        start_new_session=True,
    )
    STARTED.append(proc)
    # Ours closed, uvicorn's open: a page that connects before uvicorn serves waits in the
    # backlog (no readiness poll: the browser launches meanwhile); if uvicorn died, it is refused.
    app_socket.close()
    try:
        yield app_url
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Browser]:
    """The system Chromium, headless."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(ai_worker: Future[WorkerProcess], webapp: str, browser: Browser) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage) on the example's page, recording the answer box."""
    ai_worker.result(60)
    context = browser.new_context()
    context.add_init_script(RECORD_ANSWERS)
    tab = context.new_page()
    tab.goto(webapp)
    yield tab
    context.close()


def _ask(page: Page, question: str) -> str:
    """Ask on the page; the task id the app answered."""
    page.fill("#question", question)
    with page.expect_response(lambda r: r.url.endswith("/ask")) as response:
        page.click("#ask")
    body: dict[str, Any] = response.value.json()
    return str(body["task_id"])


def _answers(page: Page) -> list[str]:
    return list(page.evaluate("window.__answers"))


def _wait_answers(page: Page, count: int) -> list[str]:
    page.wait_for_function(f"window.__answers.length >= {count}", timeout=20_000)
    return _answers(page)


def _proper_prefixes(texts: list[str], whole: str) -> bool:
    return all(whole.startswith(t) and len(t) < len(whole) for t in texts)


def test_the_answer_streams_in_and_a_reload_resumes_it_exactly(
    page: Page, client: TaskClient
) -> None:
    question = "Why does a reload lose nothing?"
    answer = reply_text(question, TOKENS)
    task_id = _ask(page, question)
    partials = _wait_answers(page, 3)
    assert len(set(partials)) == len(partials) >= 3, partials
    assert _proper_prefixes(partials, answer), partials

    resumed: list[str] = []
    page.on("request", lambda r: resumed.append(r.url) if "/events" in r.url else None)
    page.reload()
    expect(page.locator("#status")).to_have_text("succeeded", timeout=20_000)
    assert page.inner_text("#answer") == answer  # nothing lost, nothing twice
    after_reload = _answers(page)
    # The reloaded page showed the text it had kept, then more of the answer arrived.
    assert len(after_reload) >= 2 and after_reload[-1] == answer, after_reload
    assert _proper_prefixes(after_reload[:-1], answer), after_reload
    # It asked for what follows the last event it had kept, not for everything again.
    cursors = [parse_qs(urlsplit(u).query).get("after", ["0"])[0] for u in resumed]
    assert cursors and int(cursors[0]) > 0, resumed
    assert client.get(task_id).state == TaskState.SUCCEEDED


def test_cancel_stops_the_task_and_the_model_request(
    page: Page, client: TaskClient, llm: StandIn
) -> None:
    question = "Can a cancel reach the model?"
    answer = reply_text(question, TOKENS)
    task_id = _ask(page, question)
    _wait_answers(page, 1)
    page.click("#cancel")
    expect(page.locator("#status")).to_have_text("cancelled", timeout=20_000)
    assert client.get(task_id).state == TaskState.CANCELLED
    assert _proper_prefixes([page.inner_text("#answer")], answer)
    expect(page.locator("#cancel")).to_be_disabled()

    def closed() -> bool:
        mine = [r for r in llm.records() if question in str(r.body.get("messages"))]
        return bool(mine) and mine[-1].outcome == "disconnected"

    eventually(closed, what="the model request closed by the cancel")


def test_a_retry_midway_starts_the_answer_over_on_the_page(
    page: Page, client: TaskClient, llm: StandIn
) -> None:
    question = "What if the model hangs up?"
    llm.script(MODEL, Step("drop", after=5), Step(tokens=20))  # a short second answer
    task_id = _ask(page, question)
    expect(page.locator("#status")).to_have_text("succeeded", timeout=20_000)
    assert page.inner_text("#answer") == reply_text(question, 20)  # no token of attempt 1 left
    assert client.get(task_id).attempt == 2
    shown = _answers(page)
    assert any(len(b) < len(a) for a, b in itertools.pairwise(shown)), shown  # the reset shown


def _keep(page: Page, client: TaskClient, base: str, *, bad_token: bool = False) -> str:
    """Leave in the tab's storage what the page keeps for a task (one that stays PENDING, so
    its stream is idle), as if it had asked and been reloaded; the task id."""
    handle = client.submit("test.echo", {"web": True}, delay=3600)
    token = ("x" if bad_token else "") + client.watch_token(handle.id, cancel=True)
    url = f"{base}/{handle.id}/events?token={token}"
    kept: dict[str, Any] = {"task_id": handle.id, "events_url": url, "cancel_url": ""}
    kept |= {"seq": 0, "text": "", "state": "PENDING", "done": False}
    page.evaluate("([k, t]) => sessionStorage.setItem(k, JSON.stringify(t))", [STORAGE_KEY, kept])
    return handle.id


def _slot_freed_within_a_second(client: TaskClient, page: Page) -> None:
    assert client.stats().watch_streams_open == 1  # the page's EventSource, and nothing else
    page.close()
    eventually(lambda: client.stats().watch_streams_open == 0, 1.0, "the watcher slot freed in 1 s")


def test_closing_the_tab_mid_answer_frees_the_watcher_slot_at_once(
    page: Page, client: TaskClient
) -> None:
    eventually(lambda: client.stats().watch_streams_open == 0, what="no stream open before")
    task_id = _ask(page, "Who notices a closed tab?")
    _wait_answers(page, 1)
    _slot_freed_within_a_second(client, page)
    assert client.get(task_id).state == TaskState.RUNNING  # a closed tab is not a cancel
    client.cancel(task_id)


def test_closing_a_tab_on_an_idle_stream_frees_its_slot_at_once(
    page: Page, client: TaskClient, base: str
) -> None:
    eventually(lambda: client.stats().watch_streams_open == 0, what="no stream open before")
    task_id = _keep(page, client, base)
    page.reload()
    expect(page.locator("#status")).to_have_text("pending")
    eventually(lambda: client.stats().watch_streams_open == 1, what="the page's stream open")
    # Nothing is written to this stream for KEEPALIVE s: only the disconnect can free it sooner.
    _slot_freed_within_a_second(client, page)
    client.cancel(task_id)


def test_a_refused_stream_is_shown_and_the_page_can_ask_again(
    page: Page, client: TaskClient, base: str
) -> None:
    task_id = _keep(page, client, base, bad_token=True)  # expired, or altered as here
    page.reload()
    expect(page.locator("#problem")).to_contain_text("refused")
    expect(page.locator("#ask")).to_be_enabled()
    client.cancel(task_id)
