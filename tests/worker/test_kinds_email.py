"""`email.send`'s last check: the message as sent has exactly the header lines that were set."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage

import pytest

from taskcast.worker.kinds.email import _check_headers


def message(subject: str) -> EmailMessage:
    """A message built past the payload's checks, as an older or newer `email` might fold it."""
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = "noreply@example.test"
    msg["Subject"] = subject
    msg.set_content("body")
    return msg


def test_plain_and_encoded_subjects_pass() -> None:
    _check_headers(message("hello"))
    _check_headers(message("=?utf-8?q?caf=C3=A9?="))


@pytest.mark.parametrize(
    ("subject", "named"),
    [
        ("=?utf-8?q?hi=0D=0AX-Injected:_1?=", "x-injected"),
        ("=?utf-8?q?hi=0D=0A=0D=0Aanother_body?=", "content-type"),  # the body starts early
    ],
)
def test_a_header_line_break_is_caught_whatever_the_python(subject: str, named: str) -> None:
    msg = message(subject)
    if str(msg["Subject"]) not in msg.as_string():  # a Python that encodes it is safe already
        pytest.skip("this Python's email package folds the decoded line break safely")
    with pytest.raises(ValueError, match=named):
        _check_headers(msg)
