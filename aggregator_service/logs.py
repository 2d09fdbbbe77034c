"""Structured logs: one line per event, as text (``key=value``) or JSON, with run/round/site/version ids.

Library code logs with ``event(logger, "update accepted", run=..., round=..., site=...)``; the fields travel
in the record's ``fields`` attribute, so any handler (journald, a file, a collector) can use them.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

_FIELDS = "fields"


def event(logger: logging.Logger, message: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``message`` with structured ``fields`` (``None`` values are left out)."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={_FIELDS: {k: v for k, v in fields.items() if v is not None}})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    value = getattr(record, _FIELDS, None)
    return value if isinstance(value, dict) else {}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        pairs = " ".join(f"{key}={_text(value)}" for key, value in _fields(record).items())
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if pairs:
            line = f"{line} {pairs}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c.isspace() or c in '"=' for c in text)) else text


def configure_logging(fmt: str = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send the service's logs (and grpc's) to ``stream`` (stderr) in ``fmt``; replaces earlier handlers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Alembic announces every plugin it loads at INFO; the migrations it runs are still logged.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(logging.WARNING, root.level))
