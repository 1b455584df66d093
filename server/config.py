"""Server settings: one frozen object per server process, from `TASKCAST_*` variables."""

from __future__ import annotations

from pydantic import Field, field_validator

from taskcast.core.settings import CommonSettings


class ServerSettings(CommonSettings):
    """What the gRPC server needs; every field is also a `taskcast server` flag."""

    listen: str = Field("127.0.0.1:50051", description="address the gRPC server binds")
    keepalive: float = Field(
        15.0, gt=0, description="seconds between keep-alive events on idle watch streams"
    )
    accept_any_kind: bool = Field(False, description="accept kinds no worker has registered")
    max_payload_bytes: int = Field(1 << 20, ge=2, description="largest payload_json accepted")
    max_watchers: int = Field(20_000, ge=1, description="concurrent WatchTask streams per process")
    watcher_buffer: int = Field(
        1024, ge=8, description="events buffered per watcher before it is told to resume"
    )
    auth_tokens: str = Field(
        "", description="comma-separated bearer tokens with full access (empty: no auth)"
    )
    read_tokens: str = Field("", description="comma-separated bearer tokens that may only read")
    grace: float = Field(5.0, ge=0, description="seconds in-flight calls get on shutdown")
    max_health_watchers: int = Field(
        1000, ge=1, description="concurrent grpc.health.v1 Watch streams per process"
    )
    list_max_bytes: int = Field(
        1 << 20, ge=1024, description="bytes of tasks in one ListTasks page (at least one task)"
    )
    max_pending_calls: int = Field(
        10_000, ge=1, description="calls accepted but not yet started; past it new ones fail"
    )
    max_streams_per_connection: int = Field(
        4096, ge=1, description="concurrent calls on one HTTP/2 connection; more are refused"
    )
    connection_idle: float = Field(
        300.0, gt=0, description="seconds a connection without calls is kept before it is closed"
    )
    connection_age: float = Field(
        3600.0, gt=0, description="seconds before a connection is asked to reconnect (GOAWAY)"
    )
    connection_age_grace: float = Field(
        30.0, ge=0, description="seconds calls get to finish on a connection past its age"
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, description="port of the Prometheus /metrics endpoint (0: off)"
    )
    metrics_host: str = Field("127.0.0.1", description="address the /metrics endpoint binds")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be host:port, e.g. 127.0.0.1:50051 or [::]:50051")
        return value
