"""Payloads checked against their kind's JSON schema at submit, with bounded field violations.

Workers register the JSON schema of a kind's pydantic payload model (`core.kinds.KindInfo`);
SubmitTask checks the payload against it before anything is queued, so a bad payload is
INVALID_ARGUMENT naming each bad field instead of a task that fails 10 ms later in a worker.
Validators are compiled once per (kind, schema text): a worker that registers a new version of
the schema (a rolling deploy) gets a new validator, the old one ages out of the LRU.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from taskcast.server.errors import MAX_LISTED, InvalidArgument, clip
from taskcast.server.validation import listing

log = logging.getLogger("taskcast.server")

CACHE_SIZE = 256  # compiled validators kept; a fleet serves tens of kinds, a few versions each
INLINE_BYTES = 16 << 10  # larger payloads are checked off the event loop (about 7 ms and more)
FIELD = "payload_json"  # the request field every violation's path starts from
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"),
               (list, "array"), (dict, "object"), (type(None), "null"))  # fmt: skip


class Validators:
    """Compiled validators by (kind, schema text), the least recently used dropped past a bound."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._cache: OrderedDict[tuple[str, str], Draft202012Validator | None] = OrderedDict()

    def get(self, kind: str, schema: str) -> Draft202012Validator | None:
        """The validator of `schema`; None when the schema itself is broken (then, any object)."""
        key = (kind, schema)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        validator = _compile(kind, schema)
        self._cache[key] = validator
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return validator


def _compile(kind: str, schema: str) -> Draft202012Validator | None:
    try:
        parsed = json.loads(schema)
        Draft202012Validator.check_schema(parsed)
    except (ValueError, SchemaError) as exc:
        # A worker's bug must not stop every submit of the kind: its handler still validates.
        log.warning("kind %s registered an invalid payload schema, not checked: %s", kind, exc)
        return None
    return Draft202012Validator(parsed)


VALIDATORS = Validators()


async def check(kind: str, schema: str, payload_json: str) -> None:
    """Raise InvalidArgument naming each field of `payload_json` that `schema` refuses.

    `payload_json` is a JSON object of at most the payload limit (1 MiB by default), already
    checked by `validation.payload`; at most 10 errors are looked for (`MAX_LISTED`). Checking
    costs about 0.4 us per byte (a 1 MiB `ai.chat` payload of 9,000 messages: 430 ms), so a
    payload over 16 KiB is checked on a thread, where the GIL's 5 ms switch keeps the event loop
    answering other calls meanwhile.
    """
    validator = VALIDATORS.get(kind, schema)  # on the loop: the cache is not thread-safe
    if validator is None:
        return
    if len(payload_json) <= INLINE_BYTES:
        found = _violations_of(validator, payload_json)
    else:
        found = await asyncio.to_thread(_violations_of, validator, payload_json)
    if found:
        raise InvalidArgument(found)


def _violations_of(validator: Draft202012Validator, payload_json: str) -> list[tuple[str, str]]:
    return violations(validator, json.loads(payload_json))


def violations(validator: Draft202012Validator, value: Any) -> list[tuple[str, str]]:
    """(field, description) for the first errors of `value`, each field once, at most 10."""
    out: dict[str, str] = {}
    # iter_errors is lazy: stopping after MAX_LISTED errors bounds the work on a bad payload.
    for error in itertools.islice(validator.iter_errors(value), MAX_LISTED):
        for field, description in _describe(error):
            out.setdefault(field, description)
    return list(out.items())[:MAX_LISTED]


def _describe(e: ValidationError) -> list[tuple[str, str]]:
    """What is wrong, in words that never echo more than a clipped bit of the payload."""
    path = _path(e.absolute_path)
    schema = e.schema if isinstance(e.schema, Mapping) else {}
    expected: Any = e.validator_value  # the keyword's value in the schema
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        known = sorted(schema.get("properties", {}))
        unknown = [k for k in e.instance if k not in set(known)][:MAX_LISTED]
        allowed = listing(known) or "none"
        return [(_join(path, k), f"is not a known field; known fields: {allowed}") for k in unknown]
    if e.validator == "required" and isinstance(e.instance, dict):
        return [(_join(path, k), "is required") for k in expected if k not in e.instance]
    if e.validator in ("anyOf", "oneOf") and e.context:
        # The branch the value's type fits explains best ("must be at most 2", not "not null").
        fitting = [c for c in e.context if not (c.validator == "type" and not c.relative_path)]
        if fitting:
            return _describe(fitting[0])
        types = [str(s["type"]) for s in expected if isinstance(s, dict) and "type" in s]
        if types:
            return [(path, f"must be {' or '.join(types)}, got {_json_type(e.instance)}")]
    if e.validator == "type":
        types = expected if isinstance(expected, list) else [expected]
        return [(path, f"must be {' or '.join(map(str, types))}, got {_json_type(e.instance)}")]
    if e.validator == "enum":
        return [(path, f"must be one of {listing([json.dumps(v) for v in expected])}")]
    return [(path, clip(e.message, 200))]


def _path(parts: Iterable[str | int]) -> str:
    path = FIELD
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else _join(path, part)
    return path


def _join(path: str, key: str) -> str:
    """`path.key`, or `path['key']` for a key that is not a plain name (clipped, quoted)."""
    return f"{path}.{key}" if _NAME.fullmatch(key) else f"{path}[{clip(key)!r}]"


def _json_type(value: Any) -> str:
    for cls, name in _JSON_TYPES:
        if isinstance(value, cls):
            return name
    return type(value).__name__
