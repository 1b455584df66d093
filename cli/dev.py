"""`taskcast dev`: Redis (found or started), the server and one worker, in the foreground."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskcast.cli import flags, redis_proc
from taskcast.cli.llm_standin import StandIn
from taskcast.cli.show import console
from taskcast.server.config import ServerSettings

DEMO_PROMPT = "Why put a queue in front of a slow model?"


def _wait_healthy(address: str, procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout
        while True:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a process exited during start-up; see its log above")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1, wait_for_ready=True)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not become healthy on {address}")


def _wait_kinds(url: str, kinds: str, procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    from taskcast.core import redisurl

    client = redisurl.sync_client(url)
    deadline = time.monotonic() + timeout
    try:
        while not client.hexists(kinds, "demo.sleep"):
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("the worker exited during start-up; see its log above")
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not register its kinds")
            time.sleep(0.05)  # the worker has no readiness signal but this registration
    finally:
        client.close()


def _free_from(host: str, port: int, tries: int = 20) -> int:
    """`port` if nothing listens on it, else the next free one of `tries`."""
    for candidate in range(port, port + tries):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.bind((host, candidate))
            except OSError:
                continue
            return candidate
    raise RuntimeError(f"no free port in {port}-{port + tries - 1} for the HTTP gateway")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:  # server first: watchers are told to resume; then the worker finishes up
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(35)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _model_server() -> tuple[dict[str, str], StandIn | None]:
    """The worker's extra environment for `ai.chat`, and the stand-in when we start one."""
    if os.environ.get("TASKCAST_AI_API_KEY") or os.environ.get("TASKCAST_AI_BASE_URL"):
        where = os.environ.get("TASKCAST_AI_BASE_URL") or "the OpenAI API"
        console.print(f"ai.chat uses {where} (TASKCAST_AI_* from your environment)")
        return {}, None
    standin = StandIn(rate=30, tokens=60).start()
    console.print(
        "[yellow]no TASKCAST_AI_API_KEY or TASKCAST_AI_BASE_URL set:[/] started the local "
        f"stand-in model server on [bold]{standin.url}[/] (deterministic text, 30 tokens/s); "
        "ai.chat on this worker uses it"
    )
    return {"TASKCAST_AI_BASE_URL": standin.url, "TASKCAST_AI_MODEL": "standin"}, standin


def run(args: argparse.Namespace) -> int:
    """Start everything, print how to use it, stop everything on Ctrl-C."""
    settings = flags.build(ServerSettings, args)
    if settings.tls:  # a machine's own loopback: the health check and the hints are plaintext
        console.print("[yellow]taskcast dev serves plaintext on loopback: TLS settings ignored[/]")
        settings = settings.model_copy(update={"tls_cert": "", "tls_key": "", "tls_client_ca": ""})
    data_dir = Path(args.data_dir).resolve()
    redis_child = None
    if redis_proc.answers(settings.redis_url):
        console.print(f"using the Redis at [bold]{settings.redis_url}[/]")
    else:
        redis_child = redis_proc.RedisProcess(data_dir / "redis").start()
        settings = settings.model_copy(update={"redis_url": redis_child.url})
        console.print(
            f"started redis-server on port {redis_child.port} (AOF data in {redis_child.data_dir})"
        )
    if not settings.http_port:  # the HTTP gateway, for a web app's page: 8080 or the next free
        settings = settings.model_copy(update={"http_port": _free_from(settings.http_host, 8080)})
    env = flags.environ_with(settings)
    ai_env, standin = _model_server()
    # Metrics: the server's on the port given, the worker's on the next one.
    mport = settings.metrics_port
    metrics_env = {"TASKCAST_METRICS_PORT": str(mport + 1)} if mport else {}
    exe = [sys.executable, "-m", "taskcast.cli.main"]
    procs: list[subprocess.Popen[bytes]] = []  # server, worker
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        procs.append(subprocess.Popen([*exe, "server"], env=env, start_new_session=True))
        procs.append(
            subprocess.Popen(
                [*exe, "worker", *args.modules, "--processes", "1"],
                env={**env, **ai_env, **metrics_env},
                start_new_session=True,
            )
        )
        host, _, port = settings.listen.rpartition(":")
        address = f"{'127.0.0.1' if host in ('0.0.0.0', '[::]') else host}:{port}"
        _wait_healthy(address, procs, 30)
        _wait_kinds(settings.redis_url, settings.layout.kinds(), procs, 30)
        server_env = "" if address == "127.0.0.1:50051" else f"TASKCAST_SERVER={address} "
        console.print(
            f"\n[bold green]taskcast is up[/] on {address}. In another terminal:\n\n"
            f"  {server_env}.venv/bin/taskcast submit ai.chat "
            f'--json \'{{"prompt": "{DEMO_PROMPT}"}}\' --watch\n\n'
            "streams a completion token by token; a task that only sleeps and reports progress:\n\n"
            f"  {server_env}.venv/bin/taskcast submit demo.sleep "
            '--json \'{"seconds": 3, "steps": 6}\' --watch\n\n'
            f"HTTP gateway for web apps (JSON and Server-Sent Events): "
            f"http://{settings.http_host}:{settings.http_port}/v1/tasks/<id>/events\n\n"
            "Ctrl-C stops everything started here.\n",
            soft_wrap=True,
        )
        while not stopping.wait(0.5):
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                name = "server" if dead[0] is procs[0] else "worker"
                console.print(f"[red]the {name} exited with {dead[0].returncode}; stopping[/]")
                return 1
        return 0
    finally:
        console.print("stopping ...")
        _stop(procs)
        if standin is not None:
            standin.stop()
        if redis_child is not None:
            redis_child.stop()
        console.print("stopped.")
