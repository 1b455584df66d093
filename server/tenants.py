"""Who is calling: each bearer token belongs to one tenant, with full or read-only access.

The tokens come from two places, merged at start-up and checked together:
- `TASKCAST_AUTH_TOKENS` / `TASKCAST_READ_TOKENS`: the default tenant's, as before tenants
  (a `[tenants.default]` table in the file adds to them).
- `TASKCAST_TENANTS_FILE`: a TOML file, one table per tenant::

      [tenants.acme]
      tokens = ["..."]             # full access
      read_tokens = ["..."]        # may only read
      token_sha256 = ["<hex>"]     # the same, given as SHA-256 digests: the file holds no secret
      read_token_sha256 = ["<hex>"]
      weight = 2.0                 # its share of starts against other tenants' (default 1)

A token is known by its SHA-256 digest, looked up in one dict: the lookup's timing can only tell
about a digest, and finding a token from its digest is a preimage search. No token configured at
all: every call is the default tenant's, with full access (`OPEN`).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from taskcast.core import scheduling
from taskcast.core.layout import DEFAULT_TENANT

__all__ = ["OPEN", "Caller", "TenantsError", "Tokens", "digest", "load", "parse_tokens"]

NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
HEX = re.compile(r"[0-9a-f]{64}")
FIELDS = {  # field -> (read only, given as digests)
    "tokens": (False, False),
    "read_tokens": (True, False),
    "token_sha256": (False, True),
    "read_token_sha256": (True, True),
}
KEYS = {*FIELDS, "weight"}


@dataclass(frozen=True, slots=True)
class Caller:
    """Whom a call is for: its tenant, and whether it may write (submit, cancel, retry); for a
    watch token (the HTTP gateway's), the one task it opens and whether it may cancel it."""

    tenant: str
    can_write: bool
    task_id: str = ""
    cancel: bool = False
    weight: float = 1.0  # the tenant's share of starts on a busy queue (core/scheduling.py)


OPEN = Caller(DEFAULT_TENANT, True)  # a server with no tokens: everyone, as before tenants


class TenantsError(ValueError):
    """The tenants configuration is unusable; the message names the file and the entry."""


def digest(token: str) -> bytes:
    """The SHA-256 digest a token is known by."""
    return hashlib.sha256(token.encode()).digest()


class Tokens:
    """Every known token's digest and its caller."""

    def __init__(self, callers: dict[bytes, Caller]) -> None:
        self._callers = callers

    def __bool__(self) -> bool:
        return bool(self._callers)

    def resolve(self, token: str) -> Caller | None:
        """The caller a token stands for; None when it is unknown."""
        return self._callers.get(digest(token))


def parse_tokens(text: str) -> tuple[str, ...]:
    """Comma-separated tokens; blanks dropped."""
    return tuple(t.strip() for t in text.split(",") if t.strip())


def load(full: Iterable[str], read: Iterable[str], path: str = "") -> Tokens:
    """The default tenant's tokens (`full`, `read`) and those of the tenants file at `path`.

    Raises:
        TenantsError: the file cannot be read or parsed, a tenant name is invalid, an entry is
            not a list of strings, a digest is not 64 hex digits, or one token is given twice.
    """
    callers: dict[bytes, Caller] = {}
    where: dict[bytes, str] = {}
    given = [("TASKCAST_AUTH_TOKENS", DEFAULT_TENANT, False, False, list(full))]
    given.append(("TASKCAST_READ_TOKENS", DEFAULT_TENANT, True, False, list(read)))
    weights: dict[str, float] = {}
    if path:
        entries, weights = _entries(path)
        given += entries
    for origin, tenant, read_only, hashed, values in given:
        for value in values:
            key = bytes.fromhex(value) if hashed else digest(value)
            if key in callers:
                raise TenantsError(
                    f"{origin}: a token is also given in {where[key]}; each token belongs to "
                    "one tenant, with one kind of access"
                )
            weight = weights.get(tenant, 1.0)
            callers[key], where[key] = Caller(tenant, not read_only, weight=weight), origin
    return Tokens(callers)


Entry = tuple[str, str, bool, bool, list[str]]  # where, tenant, read only, as digests, values


def _entries(path: str) -> tuple[list[Entry], dict[str, float]]:
    """Each entry of the file, and the weights it gives tenants."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise TenantsError(f"tenants file {path}: cannot read it: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TenantsError(f"tenants file {path}: not valid TOML: {exc}") from None
    tenants = data.get("tenants")
    if set(data) - {"tenants"} or not isinstance(tenants, dict) or not tenants:
        raise TenantsError(
            f"tenants file {path}: expected only [tenants.<name>] tables, at least one"
        )
    out: list[Entry] = []
    weights: dict[str, float] = {}
    for name, table in tenants.items():
        origin = f"tenants file {path}, [tenants.{name}]"
        if not NAME.fullmatch(name):
            raise TenantsError(
                f"{origin}: a tenant name is 1-63 characters of a-z 0-9 _ . - starting with "
                "a-z or 0-9"
            )
        if not isinstance(table, dict) or not set(table) & set(FIELDS) or set(table) - KEYS:
            raise TenantsError(
                f"{origin}: give one or more of {', '.join(FIELDS)}, and optionally weight"
            )
        if "weight" in table:
            weights[name] = _weight(origin, table["weight"])
        for field, values in table.items():
            if field == "weight":
                continue
            read_only, hashed = FIELDS[field]
            entry = f"{origin} {field}"
            out.append((entry, name, read_only, hashed, _values(entry, values, hashed)))
    return out, weights


def _weight(origin: str, value: object) -> float:
    """A tenant's weight: a number in bounds (a bool is not one)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not scheduling.MIN_WEIGHT <= value <= scheduling.MAX_WEIGHT
    ):
        raise TenantsError(
            f"{origin} weight: a number from {scheduling.MIN_WEIGHT:g} to "
            f"{scheduling.MAX_WEIGHT:g} (1 by default)"
        )
    return float(value)


def _values(origin: str, values: object, hashed: bool) -> list[str]:
    """The entry's strings (digests in lower case); an empty list is allowed (rotation)."""
    if not isinstance(values, list) or not all(
        isinstance(v, str) and v.strip() and v == v.strip() for v in values
    ):
        raise TenantsError(f"{origin}: expected a list of non-empty strings without spaces")
    if not hashed:
        return list(values)
    if not all(HEX.fullmatch(v.lower()) for v in values):
        raise TenantsError(f"{origin}: a SHA-256 digest is 64 hex digits (sha256sum's output)")
    return [v.lower() for v in values]
