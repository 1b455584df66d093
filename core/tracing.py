"""OpenTelemetry traces of server and worker: off unless the standard `OTEL_*` variables ask.

Tracing is on in a process when the application already set up a tracer provider (running under
`opentelemetry-instrument`, say), or when `OTEL_TRACES_EXPORTER` or an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `..._TRACES_ENDPOINT`) is set and `OTEL_SDK_DISABLED` is not.
Then this module builds a provider (resource from `OTEL_SERVICE_NAME` and
`OTEL_RESOURCE_ATTRIBUTES`) with the exporters `OTEL_TRACES_EXPORTER` names (default `otlp`),
found through the SDK's own entry points, each configured by its own `OTEL_EXPORTER_*` variables.
OpenTelemetry is imported only then: without it (`taskcast[otel]`) nothing changes.

A task's trace context crosses the queue as a W3C `traceparent` string stored with the task.
"""

from __future__ import annotations

import logging
import os
import re
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

__all__ = ["setup", "traceparent", "context_of", "traceparent_of", "TEST_SPANS_FILE"]

log = logging.getLogger("taskcast.tracing")

#: Test-only: append every span to this file as a JSON line (the worker runs in a subprocess).
TEST_SPANS_FILE = "TASKCAST_TEST_SPANS_FILE"
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
# version 00 (a later version may add fields after these four); ids of all zeros are invalid.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def traceparent(value: str | None) -> str:
    """`value` if it is a W3C traceparent, else "" (a bad one is ignored, never an error)."""
    ok = value and len(value) <= 128 and not value.startswith("ff") and _TRACEPARENT.match(value)
    return value if ok and value else ""


def configured() -> bool:
    """Whether the `OTEL_*` variables (or the test hook) ask for traces."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters == "none":
        return False
    return bool(exporters or any(env.get(k) for k in _ENDPOINTS) or env.get(TEST_SPANS_FILE))


def setup(service: str) -> Tracer | None:
    """This process's tracer, or None when tracing is off; builds the provider when asked to."""
    try:
        from opentelemetry import trace
    except ImportError:
        if configured():
            log.warning("OTEL_* asks for traces; install them with: pip install 'taskcast[otel]'")
        return None
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return trace.get_tracer("taskcast")  # the application's own provider
    if not configured():
        return None
    try:
        provider = _provider(service)
    except ImportError:
        log.warning("OTEL_* asks for traces but opentelemetry-sdk is missing: taskcast[otel]")
        return None
    trace.set_tracer_provider(provider)
    return trace.get_tracer("taskcast")


def _provider(service: str) -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    named = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": service}
    provider = TracerProvider(resource=Resource.create(named))
    names = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if names or any(os.environ.get(k) for k in _ENDPOINTS):
        for name in (n.strip() for n in (names or "otlp").split(",") if n.strip()):
            exporter = _exporter(name)
            if exporter is not None:
                provider.add_span_processor(BatchSpanProcessor(exporter))
    path = os.environ.get(TEST_SPANS_FILE)
    if path:  # one line per span, written as it ends (SimpleSpanProcessor: nothing buffered)
        out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held for the process's life
        console = ConsoleSpanExporter(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")
        provider.add_span_processor(SimpleSpanProcessor(console))
    return provider


def _exporter(name: str) -> Any:
    """The span exporter the SDK's entry points call `name`, or None (logged) when absent."""
    # `otlp` is the name the opentelemetry-exporter-otlp bundle registers; the gRPC and HTTP
    # packages alone register only their own names.
    candidates = ("otlp", "otlp_proto_grpc", "otlp_proto_http") if name == "otlp" else (name,)
    for candidate in candidates:
        for point in entry_points(group="opentelemetry_traces_exporter", name=candidate):
            return point.load()()
    log.warning("no span exporter named %r is installed (OTEL_TRACES_EXPORTER)", name)
    return None


def context_of(parent: str) -> Context | None:
    """The trace context a stored traceparent names (None: start a new trace)."""
    if not parent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": parent})


def traceparent_of(span: Span) -> str:
    """The traceparent that makes `span` the parent of what continues it."""
    from opentelemetry.trace import set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=set_span_in_context(span))
    return carrier.get("traceparent", "")
