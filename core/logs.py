"""Log output shared by server and worker: `text` (one readable line) or `json` (one object a line).

A JSON line holds `time`, `level`, `logger` and `message`, then every extra field a filter or an
`extra=` put on the record (the worker adds `task_id`, `kind` and `attempt` to each line written
while an attempt runs), and `exc_info` as text when there is one.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["LogFormat", "JsonFormatter", "use_format"]

LogFormat = Literal["text", "json"]

# Every attribute a plain LogRecord has: anything else on a record is an extra field to emit.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line: the four fixed keys first, then its extra fields."""
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def use_format(fmt: LogFormat, *filters: logging.Filter) -> None:
    """Give every handler of the root logger `fmt`'s formatter (and `filters`), e.g. the ones
    another library (Dramatiq's CLI) installed before us. Text keeps the handlers' own format."""
    for handler in logging.getLogger().handlers:
        if fmt == "json":
            handler.setFormatter(JsonFormatter())
        for f in filters:
            handler.addFilter(f)
