"""`email.send`: one message through the worker's SMTP server, accepted at most once per task.

The send runs inside `ctx.once`: once the server has accepted the message, the acceptance is on
record before the session is closed, so a retry (or a duplicate delivery) returns the stored
result instead of sending again. What remains is the window between the server's acceptance and
that record (a crash exactly there); the Message-ID is the same on every attempt, so receivers
that de-duplicate on it see one message even then.
"""

from __future__ import annotations

import contextlib
import email.errors
import email.headerregistry
import email.parser
import email.policy
import email.utils
import functools
import smtplib
import ssl
import unicodedata
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from taskcast.worker.context import TaskContext
from taskcast.worker.errors import NonRetryableError
from taskcast.worker.kinds._upstream import UpstreamRejectedError, UpstreamUnavailableError
from taskcast.worker.registry import task

DEFAULT_PORTS = {"tls": 465, "starttls": 587, "none": 25}
_POLICY = email.policy.SMTP


class SMTPSettings(BaseSettings):
    """The SMTP server this worker sends through (`TASKCAST_SMTP_*` variables)."""

    model_config = SettingsConfigDict(env_prefix="TASKCAST_SMTP_", frozen=True, extra="ignore")

    host: str = Field("localhost", description="SMTP server host")
    port: int | None = Field(None, ge=1, le=65535, description="port (465 tls, 587 starttls, 25)")
    security: Literal["starttls", "tls", "none"] = Field("starttls", description="how to encrypt")
    ca_file: str | None = Field(
        None, description="PEM CA bundle to verify the server with, instead of the system's roots"
    )
    username: str | None = Field(None, description="login name, if the server wants one")
    password: SecretStr | None = Field(None, description="login password")
    sender: str = Field("", description="the From address of every message")
    timeout: float = Field(30.0, gt=0, description="seconds per SMTP command")

    @field_validator("ca_file")
    @classmethod
    def _loads(cls, value: str | None) -> str | None:
        """A bundle that loads: checked once, so a bad path fails the task, not every retry."""
        if value is not None:
            try:
                ssl.create_default_context(cafile=value)
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"cannot load {value} as a PEM CA bundle: {exc}") from None
        return value


def _control(text: str) -> str | None:
    """The first control or line-break character in `text` (a tab is fine), else None."""
    for c in text:
        if c != "\t" and unicodedata.category(c) in ("Cc", "Zl", "Zp"):
            return c
    return None


def _mailbox(value: str) -> email.headerregistry.Address:
    """The one mailbox `value` names, checked as the `email` package will decode it.

    Raises:
        ValueError: `value` is not exactly one address, or holds what could break a header line.
    """
    if (c := _control(value)) is not None:
        raise ValueError(f"control character {c!r} in address {value!r}")
    # Python 3.11.7 writes line breaks decoded from an encoded word raw (CVE-2024-6923), and a
    # name can be sent as plain Unicode anyway: no encoded words in addresses at all.
    if "=?" in value:
        raise ValueError(
            f"no encoded words (=?...?=) in addresses, write the name as is: {value!r}"
        )
    try:
        header = _POLICY.header_factory("To", value)
    except (ValueError, email.errors.HeaderParseError):
        raise ValueError(f"not an email address: {value!r}") from None
    if len(header.addresses) != 1 or header.groups[0].display_name is not None:
        # One string shown as two addresses but sent to one: refused, not split, since a comma
        # may also sit inside a quoted name ("Doe, Jane" <jane@example.test>).
        raise ValueError(f"one address per string (give a list for several): {value!r}")
    addr: email.headerregistry.Address = header.addresses[0]
    if header.defects or "@" not in addr.addr_spec or _control(str(addr)):
        raise ValueError(f"not an email address: {value!r}")
    return addr


def _address(value: str) -> str:
    """`value` itself, once `_mailbox` accepts it."""
    _mailbox(value)
    return value


def _email_schema(schema: dict[str, Any]) -> None:
    """The schema servers check: `to`, `cc` and `bcc` take one address or a list, as the model."""
    for name in ("to", "cc", "bcc"):
        listed = dict(schema["properties"][name])
        title = listed.pop("title", name)
        schema["properties"][name] = {"anyOf": [{"type": "string"}, listed], "title": title}


class EmailPayload(BaseModel):
    """An `email.send` payload."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_email_schema)

    to: list[str] = Field(min_length=1)
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    reply_to: str | None = None
    subject: str = Field(min_length=1, max_length=998)
    text: str | None = None
    html: str | None = None

    @field_validator("to", "cc", "bcc", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("to", "cc", "bcc")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        return [_address(v) for v in value]

    @field_validator("reply_to")
    @classmethod
    def _reply_to(cls, value: str | None) -> str | None:
        return None if value is None else _address(value)

    @field_validator("subject")
    @classmethod
    def _one_line(cls, value: str) -> str:
        try:
            decoded = str(_POLICY.header_factory("Subject", value))
        except (ValueError, email.errors.HeaderParseError) as exc:
            raise ValueError(f"not a valid subject: {exc}") from None
        for text, how in ((value, ""), (decoded, " once its encoded words are decoded")):
            if (c := _control(text)) is not None:
                raise ValueError(f"must be one line without control characters ({c!r}{how})")
        return value

    def recipients(self) -> list[str]:
        """Every envelope recipient (bcc included), as bare addresses, parsed as in the headers."""
        return [_mailbox(a).addr_spec for a in (*self.to, *self.cc, *self.bcc)]


@functools.cache
def _settings() -> SMTPSettings:
    try:
        settings = SMTPSettings()
    except ValidationError as exc:
        raise NonRetryableError(f"invalid TASKCAST_SMTP_* settings: {exc}") from None
    if not settings.sender:
        raise NonRetryableError("email.send needs TASKCAST_SMTP_SENDER (the From address)")
    return settings


@task("email.send", queue="email", max_attempts=5, payload=EmailPayload)
def send(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Send the message (at most once per task); return its Message-ID and who accepted it."""
    settings = _settings()
    try:
        p = EmailPayload.model_validate(payload)
    except ValidationError as exc:
        raise NonRetryableError(f"invalid email.send payload: {exc}") from None
    if p.text is None and p.html is None:
        raise NonRetryableError("invalid email.send payload: give `text`, `html` or both")
    try:
        msg = _message(p, settings, ctx.task_id)
    except (ValueError, email.errors.MessageError) as exc:  # bad input: no attempt can fix it
        raise NonRetryableError(f"invalid email.send payload: {exc}") from None
    session = _Session(settings)
    try:
        result: dict[str, Any] = ctx.once("email.send", lambda: session.send(msg, p.recipients()))
    finally:
        session.close()  # after the acceptance is on record: a failed QUIT changes nothing
    return result


def _message(p: EmailPayload, settings: SMTPSettings, task_id: str) -> EmailMessage:
    msg = EmailMessage(policy=_POLICY)
    domain = email.utils.parseaddr(settings.sender)[1].rpartition("@")[2] or "taskcast"
    msg["Message-ID"] = f"<taskcast.{task_id}@{domain}>"  # the same on every attempt
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["From"] = settings.sender
    msg["To"] = ", ".join(p.to)
    if p.cc:
        msg["Cc"] = ", ".join(p.cc)
    if p.reply_to:
        msg["Reply-To"] = p.reply_to
    msg["Subject"] = p.subject
    msg.set_content(p.text if p.text is not None else "This message is HTML only.")
    if p.html is not None:
        msg.add_alternative(p.html, subtype="html")
    _check_headers(msg)
    return msg


def _check_headers(msg: EmailMessage) -> None:
    """Raise ValueError unless the message, as sent, has exactly the header lines set.

    The values were checked before; this catches what a Python's folding might still do to them
    (an extra header, or a blank line that starts the body early), whatever its version.
    """
    sent = email.parser.BytesHeaderParser(policy=_POLICY).parsebytes(msg.as_bytes())
    names, wrote = [k.lower() for k in sent], [k.lower() for k in msg]
    if names != wrote:
        odd = (Counter(names) - Counter(wrote)) or (Counter(wrote) - Counter(names))
        raise ValueError(f"a header value would break the message's header lines ({sorted(odd)})")


class _Session:
    """One SMTP connection, opened on first use."""

    def __init__(self, settings: SMTPSettings) -> None:
        self.settings = settings
        self.smtp: smtplib.SMTP | None = None

    def send(self, msg: EmailMessage, recipients: list[str]) -> dict[str, Any]:
        """Connect, log in, send; what the server accepted and refused."""
        s = self.settings
        with _translated():
            self.smtp = self._connect()
            refused = self.smtp.send_message(msg, from_addr=s.sender, to_addrs=recipients)
        return {
            "message_id": msg["Message-ID"],
            "accepted": [r for r in recipients if r not in refused],
            "refused": {r: f"{code} {_text(text)}" for r, (code, text) in refused.items()},
        }

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        port = s.port or DEFAULT_PORTS[s.security]
        # Verified either way (hostname and chain); a private CA replaces the system's roots.
        context = ssl.create_default_context(cafile=s.ca_file)
        smtp: smtplib.SMTP
        if s.security == "tls":
            smtp = smtplib.SMTP_SSL(s.host, port, timeout=s.timeout, context=context)
        else:
            smtp = smtplib.SMTP(s.host, port, timeout=s.timeout)
        self.smtp = smtp
        if s.security == "starttls":
            smtp.starttls(context=context)
        if s.username:
            password = s.password.get_secret_value() if s.password else ""
            smtp.login(s.username, password)
        return smtp

    def close(self) -> None:
        """QUIT, ignoring any failure: the message's fate was settled before."""
        if self.smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self.smtp.quit()
            self.smtp.close()


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """The one place SMTP failures become task errors: 4xx and network trouble retry."""
    s = "the SMTP server"
    try:
        yield
    except smtplib.SMTPAuthenticationError as exc:
        raise UpstreamRejectedError(
            f"{s} refused the login ({exc.smtp_code} {_text(exc.smtp_error)}): "
            "check TASKCAST_SMTP_USERNAME and TASKCAST_SMTP_PASSWORD"
        ) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise UpstreamRejectedError(
            f"{s} does not support what is configured ({exc}): check TASKCAST_SMTP_SECURITY"
        ) from None
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        said = "; ".join(f"{r}: {c} {_text(t)}" for r, (c, t) in exc.recipients.items())
        if all(code >= 500 for code in codes):
            raise UpstreamRejectedError(f"{s} refused every recipient: {said}") from None
        raise UpstreamUnavailableError(f"{s} deferred the recipients: {said}", 0) from None
    except smtplib.SMTPResponseException as exc:
        said = f"{exc.smtp_code} {_text(exc.smtp_error)}"
        if exc.smtp_code >= 500:
            raise UpstreamRejectedError(f"{s} refused the message: {said}") from None
        raise UpstreamUnavailableError(f"{s} deferred the message: {said}", 0) from None
    except ssl.SSLCertVerificationError as exc:
        raise UpstreamRejectedError(f"{s}'s TLS certificate failed verification: {exc}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise UpstreamUnavailableError(f"{s} could not be reached: {exc}", 0) from None
