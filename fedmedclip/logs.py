"""Structured logs for every service: one line per event, as ``key=value`` text or JSON, with run, round,
site and version fields.

Code logs with ``event(log, "update accepted", site=..., run=..., round=...)``; the fields travel in the
record's ``fields`` attribute, so journald, a file or a log collector can use them as they are.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]
_FIELDS = "fields"
# Loggers that ship with handlers of their own (uvicorn's default logging config): ours take them over.
_ADOPTED = ("uvicorn", "uvicorn.error", "uvicorn.access")


def event(logger: logging.Logger, message: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``message`` with structured ``fields``; ``None`` values are left out."""
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={_FIELDS: {k: v for k, v in fields.items() if v is not None}})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    value = getattr(record, _FIELDS, None)
    return value if isinstance(value, dict) else {}


def _stamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _stamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        pairs = " ".join(f"{key}={_text(value)}" for key, value in _fields(record).items())
        line = f"{_stamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if pairs:
            line = f"{line} {pairs}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return json.dumps(text) if (not text or any(c.isspace() or c in '"=' for c in text)) else text


def _not_root_chatter(record: logging.LogRecord) -> bool:
    # open_clip reports every model build through the root logger at INFO ("Parsing model identifier"...):
    # a dozen lines per run that say nothing to an operator. Its warnings still pass.
    return record.name != "root" or record.levelno >= logging.WARNING


def configure_logging(fmt: LogFormat = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Send every log line (ours, grpc's, torch's, uvicorn's) to ``stream`` (stderr: journald under systemd).

    Replaces the root logger's earlier handlers, so calling it again (tests, restarts) does not duplicate lines.
    """
    for name in _ADOPTED:
        # Libraries that install their own handlers would print lines in their own format between ours.
        adopted = logging.getLogger(name)
        for old in list(adopted.handlers):
            adopted.removeHandler(old)
        adopted.propagate = True
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_not_root_chatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
