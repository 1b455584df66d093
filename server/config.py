"""Server settings: one frozen object per server process, from `TASKCAST_*` variables."""

from __future__ import annotations

import ssl
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from taskcast.core.settings import CommonSettings
from taskcast.server import tenants


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
    # At most an hour: past it, interest a dead server left would keep its tasks published (and
    # in `<p>:watched`) that long.
    watch_interest: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="seconds a watch's interest in its tasks' live events lasts unless renewed; "
        "each server renews its open watches' every third of it (only watched tasks' events "
        "are published)",
    )
    auth_tokens: str = Field(
        "", description="comma-separated bearer tokens with full access (empty: no auth)"
    )
    read_tokens: str = Field("", description="comma-separated bearer tokens that may only read")
    tenants_file: str = Field(
        "",
        description="TOML file of tenants and their tokens (empty: one tenant, 'default', "
        "whose tokens are auth_tokens and read_tokens)",
    )
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
    # 0: a submit is acknowledged once the primary has it. Replication is asynchronous, so a
    # failover can lose the last writes; with 1 a submit is acknowledged only once a replica
    # has it too (cost per submit: docs/operations.md, "Redis Sentinel").
    redis_wait_replicas: int = Field(
        0, ge=0, description="replicas that must confirm a submit before it is acknowledged"
    )
    redis_wait_timeout: float = Field(
        1.0, gt=0, description="seconds a submit waits for those replicas; then UNAVAILABLE"
    )

    tls_cert: str = Field(
        "", description="PEM certificate chain the server presents (empty: plaintext, no TLS)"
    )
    tls_key: str = Field("", description="PEM private key of tls_cert")
    tls_client_ca: str = Field(
        "", description="PEM CA bundle: when set, every client must present a certificate it signed"
    )

    metrics_port: int = Field(
        0, ge=0, le=65535, description="port of the Prometheus /metrics endpoint (0: off)"
    )
    metrics_host: str = Field("127.0.0.1", description="address the /metrics endpoint binds")

    http_port: int = Field(
        0, ge=0, le=65535, description="port of the HTTP/SSE gateway for web apps (0: off)"
    )
    http_host: str = Field("127.0.0.1", description="address the HTTP gateway binds")
    http_cors_origins: str = Field(
        "",
        description="comma-separated origins the gateway allows cross-origin (e.g. "
        "https://app.example.com; * for any; empty: none)",
    )
    token_secret: str = Field(
        "",
        description="key that signs watch tokens, the same on every replica (empty: a random "
        "key kept in Redis)",
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be host:port, e.g. 127.0.0.1:50051 or [::]:50051")
        return value

    @field_validator("token_secret")
    @classmethod
    def _long_secret(cls, value: str) -> str:
        if value and len(value) < 32:
            raise ValueError("must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("tls_cert", "tls_key", "tls_client_ca")
    @classmethod
    def _pem_file(cls, value: str) -> str:
        """A readable PEM file, checked at start-up rather than at the first handshake."""
        if not value:
            return value
        try:
            text = Path(value).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read {value}: {exc.strerror or exc}") from None
        if b"-----BEGIN " not in text:
            raise ValueError(f"{value} is not a PEM file (no -----BEGIN line)")
        return value

    @model_validator(mode="after")
    def _tls_complete(self) -> ServerSettings:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key go together: give both or neither")
        if self.tls_client_ca and not self.tls_cert:
            raise ValueError("tls_client_ca needs tls_cert and tls_key (mTLS is TLS first)")
        # grpc-core reports a key that does not match its certificate, or a PEM it cannot parse,
        # only as "Failed to bind to address": OpenSSL's own check names the problem.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if self.tls_cert:
            try:
                context.load_cert_chain(self.tls_cert, self.tls_key)
            except ssl.SSLError as exc:
                if exc.reason == "KEY_VALUES_MISMATCH":
                    raise ValueError("tls_key is not the private key of tls_cert") from None
                raise ValueError(
                    f"tls_cert and tls_key are not a PEM chain and key: {exc}"
                ) from None
        if self.tls_client_ca:
            try:
                context.load_verify_locations(self.tls_client_ca)
            except ssl.SSLError as exc:
                raise ValueError(f"tls_client_ca is not a PEM CA bundle: {exc}") from None
        return self

    @model_validator(mode="after")
    def _tenants(self) -> ServerSettings:
        self.tokens()  # a bad file or a token given twice fails start-up, naming the entry
        return self

    def tokens(self) -> tenants.Tokens:
        """Every token and its caller: the default tenant's and the tenants file's.

        Raises:
            TenantsError: the tenants file is unusable, or a token is given twice.
        """
        return tenants.load(
            tenants.parse_tokens(self.auth_tokens),
            tenants.parse_tokens(self.read_tokens),
            self.tenants_file,
        )

    @property
    def tls(self) -> bool:
        """Whether the server listens with TLS."""
        return bool(self.tls_cert)
