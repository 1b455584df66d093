"""Argparse types for the numbers a request carries: a value past what its field holds could not
even be put in the request (protobuf raised, and the command crashed with a traceback). The
server's own bounds are far narrower; it checks them and names them."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_SECONDS = 10**10  # about 317 years: within what a Duration (and a timedelta) holds


def fits_seconds(value: float) -> bool:
    """Whether `value` is a finite number of seconds, at most `MAX_SECONDS` either way."""
    return math.isfinite(value) and abs(value) <= MAX_SECONDS


def fits(bits: int, value: int) -> bool:
    """Whether `value` fits a signed field of `bits` bits."""
    bound: int = 2 ** (bits - 1)
    return -bound <= value < bound


def seconds(text: str) -> float:
    """A finite number of seconds, at most `MAX_SECONDS` either way."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not fits_seconds(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds")
    return value


def integer(bits: int, least: int | None = None) -> Callable[[str], int]:
    """An integer that fits a signed field of `bits` bits (and is at least `least`)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if least is not None and value < least:
            raise argparse.ArgumentTypeError(f"{text!r} is less than {least}")
        if not fits(bits, value):
            raise argparse.ArgumentTypeError(f"{text!r} is out of range")
        return value

    return parse
