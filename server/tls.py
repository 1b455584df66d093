"""The server's TLS credentials: a certificate and key, and for mTLS the clients' CA."""

from __future__ import annotations

from pathlib import Path

import grpc

from taskcast.server.config import ServerSettings


def credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files, or None to listen in plaintext.

    With `tls_client_ca` the handshake requires a client certificate signed by that CA: a client
    without one never reaches a handler (nor the token check).
    """
    if not settings.tls:
        return None
    pair = (Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())
    client_ca = Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def describe(settings: ServerSettings) -> str:
    """How the server listens, for its start-up log line."""
    if settings.tls_client_ca:
        return "mTLS: client certificates required"
    return "TLS" if settings.tls else "plaintext"
