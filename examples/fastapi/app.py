"""A FastAPI backend whose page asks a model a question and shows the answer as it streams.

    TASKCAST_SERVER=127.0.0.1:50051 GATEWAY_URL=http://127.0.0.1:8080 uvicorn app:app --port 8000

`POST /ask` submits an `ai.chat` task and answers with a watch token for that one task; the page
(`GET /`, index.html) then reads the task's events straight from taskcast's HTTP gateway with an
EventSource, and cancels through it. This app holds no stream: a browser that goes away costs it
nothing, and the gateway frees its watcher slot. README.md beside this file says how to run it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from taskcast.client import AsyncTaskClient, InvalidArgumentError, RpcError

PAGE = Path(__file__).with_name("index.html")
# Where browsers reach the gateway (`taskcast server --http-port`; `taskcast dev` prints it).
GATEWAY_URL = os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080").rstrip("/")
TOKEN_TTL = 15 * 60.0  # seconds: a page reloaded within this time resumes its stream
ANSWER_TIMEOUT = 120.0  # seconds one attempt of the model call may take

# Created at import time, as FastAPI apps do: the channel is made on first use, in uvicorn's loop.
client = AsyncTaskClient()  # TASKCAST_SERVER (else 127.0.0.1:50051), TASKCAST_TOKEN if tokens


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    """Close the client's channel when the app stops."""
    yield
    await client.close()


app = FastAPI(title="taskcast example: ask a model", lifespan=lifespan)


class Question(BaseModel):
    """What the page sends."""

    question: str = Field(min_length=1, max_length=4000)


class Asked(BaseModel):
    """The submitted task and what the page needs to follow and cancel it, and nothing else."""

    task_id: str
    token: str  # watches (and cancels) this task only, for TOKEN_TTL seconds
    events_url: str
    cancel_url: str


@app.get("/", include_in_schema=False)
async def page() -> FileResponse:
    """The page."""
    return FileResponse(PAGE, headers={"Cache-Control": "no-cache"})


@app.post("/ask")
async def ask(body: Question) -> Asked:
    """Submit the question as an `ai.chat` task and hand the page a watch token for it."""
    try:
        handle = await client.submit("ai.chat", {"prompt": body.question}, timeout=ANSWER_TIMEOUT)
        token = await client.watch_token(handle.id, ttl=TOKEN_TTL, cancel=True)
    except InvalidArgumentError as exc:  # refused at submit by the kind's payload schema
        violations = [{"field": f, "description": d} for f, d in exc.violations]
        raise HTTPException(422, {"message": exc.message, "violations": violations}) from exc
    except RpcError as exc:  # unavailable, overloaded, ...: the page says so (not a bare 500)
        raise HTTPException(503, f"taskcast: {exc}") from exc
    task = f"{GATEWAY_URL}/v1/tasks/{quote(handle.id, safe='')}"
    query = f"token={quote(token, safe='')}"
    return Asked(
        task_id=handle.id,
        token=token,
        events_url=f"{task}/events?{query}",
        cancel_url=f"{task}:cancel?{query}",
    )
