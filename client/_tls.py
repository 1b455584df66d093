"""Channel credentials for a server with TLS: the system roots, a CA bundle, a client certificate.

Each option falls back to a `TASKCAST_*` variable, like the token and the address, so the
`taskcast` command reaches a TLS server with no flags:

| option     | variable                   | meaning                                              |
|------------|----------------------------|------------------------------------------------------|
| `tls`      | `TASKCAST_TLS`             | TLS with the system's roots (1/true/yes/on)          |
| `tls_ca`   | `TASKCAST_TLS_CA`          | PEM CA bundle to verify the server with instead      |
| `tls_cert` | `TASKCAST_TLS_CLIENT_CERT` | PEM certificate chain to present (mTLS)              |
| `tls_key`  | `TASKCAST_TLS_CLIENT_KEY`  | its PEM private key                                  |

The client's certificate variables say CLIENT: `TASKCAST_TLS_CERT` and `TASKCAST_TLS_KEY` are the
server's own (server/config.py), and a shell that runs both must not hand one to the other.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc

#: Where each option is read from when it is not given.
ENV = {
    "tls": "TASKCAST_TLS",
    "tls_ca": "TASKCAST_TLS_CA",
    "tls_cert": "TASKCAST_TLS_CLIENT_CERT",
    "tls_key": "TASKCAST_TLS_CLIENT_KEY",
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")

PathLike = str | os.PathLike[str]


def credentials(
    tls: bool | None,
    tls_ca: PathLike | None,
    tls_cert: PathLike | None,
    tls_key: PathLike | None,
) -> grpc.ChannelCredentials | None:
    """The channel's TLS credentials, or None for plaintext.

    Any of `tls_ca`, `tls_cert`, `tls_key` implies TLS; `tls=False` means plaintext whatever the
    environment says.

    Raises:
        ValueError: A certificate without its key (or the reverse), TLS options with
            `tls=False`, a file that is not PEM, or `TASKCAST_TLS` not a yes or no.
        OSError: A file cannot be read.
    """
    if tls is False:
        if tls_ca or tls_cert or tls_key:
            raise ValueError("tls=False with tls_ca, tls_cert or tls_key: choose one")
        return None
    ca, ca_from = _option("tls_ca", tls_ca)
    cert, cert_from = _option("tls_cert", tls_cert)
    key, key_from = _option("tls_key", tls_key)
    if bool(cert) != bool(key):
        raise ValueError(f"{cert_from} and {key_from} go together: give both or neither")
    if not (tls or ca or cert or _env_flag()):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(ca, ca_from) if ca else None,
        private_key=_pem(key, key_from) if key else None,
        certificate_chain=_pem(cert, cert_from) if cert else None,
    )


def _option(name: str, given: PathLike | None) -> tuple[str, str]:
    """The path given, else the variable's; and how to name it in an error."""
    if given:
        return os.fspath(given), name
    return os.environ.get(ENV[name], ""), ENV[name]


def _env_flag() -> bool:
    value = os.environ.get(ENV["tls"], "").strip().lower()
    if value not in (*_TRUE, *_FALSE):
        raise ValueError(f"{ENV['tls']} must be 1/true/yes/on or 0/false/no/off, got {value!r}")
    return value in _TRUE


def _pem(path: str, source: str) -> bytes:
    """The file's bytes; checked here because grpc-core would only fail the connection later."""
    text = Path(path).read_bytes()
    if b"-----BEGIN " not in text:
        raise ValueError(f"{source}: {path} is not a PEM file (no -----BEGIN line)")
    return text
