"""A local OpenAI-compatible chat server, for offline use and for tests (standard library only).

    python -m taskcast.cli.llm_standin --port 8088 --rate 30

It serves `POST /v1/chat/completions` (streamed as server-sent events, or whole) and
`GET /v1/models`, answering with deterministic text (`reply_text`) at a set token rate. Tests
script what the next requests for a model do, and read back what happened to each request:

    with StandIn(rate=0) as llm:                        # port 0: any free port
        llm.script("m1", Step("rate_limit", retry_after=1), Step("ok"))
        ...                                             # point a client at llm.url
        assert [r.outcome for r in llm.records("m1")] == ["rate_limited", "completed"]

Another process scripts it the same way through `POST /_standin/script` with
`{"model": ..., "steps": [{"do": ...}, ...]}` and reads `GET /_standin/records`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import resource
import signal
import socket
import threading
import time
import uuid
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from taskcast.cli._standin_script import Record, Step, prompt_of, reply_text, tokens_for, words

__all__ = ["Record", "StandIn", "Step", "reply_text"]


class StandIn:
    """The server, run on a background thread: `start()` / `stop()`, or `with StandIn() as s`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        rate: float = 50.0,
        tokens: int = 48,
        api_key: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.rate, self.tokens, self.api_key = rate, tokens, api_key
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Step]] = defaultdict(deque)
        self._records: list[Record] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL clients use, e.g. `http://127.0.0.1:8088/v1`."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> StandIn:
        """Listen (a free port when `port` is 0) and serve on a daemon thread."""
        self._server = _Server((self.host, self.port), _Handler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.1,), name="llm-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end streams in progress and close every connection."""
        self.stopping.set()
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._server.close_all()
            self._server.server_close()
            self._thread.join(10)

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, model: str, *steps: Step) -> None:
        """Queue what the next requests for `model` do; unscripted requests get `Step("ok")`."""
        with self._lock:
            self._scripts[model].extend(steps)

    def records(self, model: str | None = None) -> list[Record]:
        """Requests so far (for `model`, or all), oldest first."""
        with self._lock:
            return [dataclasses.replace(r) for r in self._records if model in (None, r.model)]

    def _begin(
        self, model: str, stream: bool, key: str, body: dict[str, Any]
    ) -> tuple[Step, Record]:
        with self._lock:
            queue = self._scripts.get(model)
            step = queue.popleft() if queue else Step()
            record = Record(model, stream, key, body)
            self._records.append(record)
        return step, record


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog is 5: 40 clients connecting at once got connection resets
    # (200 at once: half of them, after up to 110 s of SYN retries). 1,024 takes a burst of a
    # thousand streams; the kernel caps it at net.core.somaxconn (4,096 on current Linux).
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], handler: Any, standin: StandIn) -> None:
        self.standin = standin
        self.conns: set[socket.socket] = set()
        super().__init__(address, handler)

    def close_all(self) -> None:
        for conn in list(self.conns):
            with contextlib.suppress(OSError):  # already gone
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-request is the normal case here, not news


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.conns.add(self.connection)

    def finish(self) -> None:
        self.server.conns.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and `taskcast dev` read records, not access logs

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        s = self.server.standin
        if self.path == "/v1/models":
            models = [{"id": m, "object": "model", "owned_by": "taskcast"} for m in ("standin",)]
            self._json(200, {"object": "list", "data": models})
        elif self.path.startswith("/_standin/records"):
            self._json(200, [dataclasses.asdict(r) for r in s.records()])
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        s = self.server.standin
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path == "/_standin/script":
            s.script(body["model"], *(Step(**step) for step in body.get("steps", [])))
            self._json(200, {"ok": True})
            return
        if self.path != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        model, stream = str(body.get("model", "")), bool(body.get("stream"))
        step, record = s._begin(model, stream, key, body)
        try:
            _Reply(self, s, step, record, body).send()
        except (BrokenPipeError, ConnectionResetError):
            record.outcome = "disconnected"
            self.close_connection = True
        finally:
            record.ended = time.time()


class _Reply:
    """One answer to a chat completion request, as its step says."""

    def __init__(
        self, h: _Handler, s: StandIn, step: Step, record: Record, body: dict[str, Any]
    ) -> None:
        self.h, self.s, self.step, self.record = h, s, step, record
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        n = step.tokens or s.tokens
        turns = body.get("messages") or []
        self.tokens = tokens_for(prompt_of(turns), min(n, int(limit or n)))
        self.finish = "length" if limit and int(limit) < n else "stop"
        self.rate = s.rate if step.rate is None else step.rate
        self.usage_wanted = bool((body.get("stream_options") or {}).get("include_usage"))
        self.prompt_tokens = sum(len(words(str(m.get("content")))) for m in turns)
        self.id = f"chatcmpl-{uuid.uuid4().hex[:12]}"

    def send(self) -> None:
        step, record = self.step, self.record
        if self.s.stopping.wait(step.delay):
            return
        wrong_key = self.s.api_key is not None and record.api_key != self.s.api_key
        if wrong_key or step.do == "unauthorized":
            record.outcome = "unauthorized"
            msg = f"Incorrect API key provided: {record.api_key}."
            self.h._json(401, {"error": {"message": msg, "type": "invalid_request_error"}})
        elif step.do in ("rate_limit", "error"):
            status = 429 if step.do == "rate_limit" else step.status
            record.outcome = "rate_limited" if status == 429 else "error"
            headers = {} if step.retry_after is None else {"Retry-After": f"{step.retry_after:g}"}
            msg = step.message or ("Rate limit reached" if status == 429 else "The server failed")
            self.h._json(status, {"error": {"message": msg, "type": "standin_error"}}, headers)
        elif record.stream:
            self._stream()
        else:
            self._whole()

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": int(self.record.at),
            "model": self.record.model,
            "choices": [choice],
        }

    def _usage(self) -> dict[str, int]:
        done = self.record.tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": done,
            "total_tokens": self.prompt_tokens + done,
        }

    def _stream(self) -> None:
        h, record, step = self.h, self.record, self.step
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        self._event(self._chunk({"role": "assistant", "content": ""}))
        for i, token in enumerate(self.tokens):
            if step.do in ("drop", "malformed") and i == step.after:
                self._break()
                return
            if i and self.rate > 0 and self.s.stopping.wait(1 / self.rate):
                return
            if self.s.stopping.is_set():
                return
            self._event(self._chunk({"content": token}))
            record.tokens += 1
        self._event(self._chunk({}, self.finish))
        if self.usage_wanted:
            self._event({**self._chunk({}), "choices": [], "usage": self._usage()})
        self._send(b"data: [DONE]\n\n")
        self._send(b"")  # the last chunk of a chunked body
        record.outcome = "completed"

    def _break(self) -> None:
        if self.step.do == "malformed":
            self.record.outcome = "malformed"
            self._send(b'data: {"id": "broken", "choices": [{"delta": \n\n')
            self._send(b"")
            return
        self.record.outcome = "dropped"
        self.h.close_connection = True
        self.h.connection.shutdown(socket.SHUT_RDWR)  # no last chunk: the body is cut short

    def _event(self, data: dict[str, Any]) -> None:
        self._send(b"data: " + json.dumps(data).encode() + b"\n\n")

    def _send(self, data: bytes) -> None:
        self.h.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _whole(self) -> None:
        if self.step.do == "drop":
            self.record.outcome = "dropped"
            self.h.close_connection = True
            return
        self.record.tokens = len(self.tokens)
        message = {"role": "assistant", "content": "".join(self.tokens)}
        choice = {"index": 0, "message": message, "finish_reason": self.finish, "logprobs": None}
        self.h._json(
            200,
            {
                "id": self.id,
                "object": "chat.completion",
                "created": int(self.record.at),
                "model": self.record.model,
                "choices": [choice],
                "usage": self._usage(),
            },
        )
        self.record.outcome = "completed"


def _raise_fd_limit(wanted: int) -> None:
    """Raise the soft open-files limit towards `wanted`, within the hard limit.

    A stream holds a socket; a common soft default of 1,024 would refuse the thousandth.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        top = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, top), hard))


def main(argv: list[str] | None = None) -> int:
    """`python -m taskcast.cli.llm_standin`: serve until Ctrl-C or SIGTERM."""
    p = argparse.ArgumentParser(prog="python -m taskcast.cli.llm_standin", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8088, help="0 for any free port (default 8088)")
    p.add_argument("--rate", type=float, default=30.0, help="tokens per second, 0 for no pause")
    p.add_argument("--tokens", type=int, default=48, help="words per answer (default 48)")
    p.add_argument("--api-key", help="refuse requests without this bearer key (default: any)")
    args = p.parse_args(argv)
    _raise_fd_limit(4096)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    server = StandIn(args.host, args.port, rate=args.rate, tokens=args.tokens, api_key=args.api_key)
    with server as s:
        print(f"stand-in model server on {s.url} ({args.rate:g} tokens/s)", flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
