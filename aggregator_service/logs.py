"""The aggregator's logging setup: the shared structured logs, with alembic's plugin chatter turned down."""

from __future__ import annotations

import logging
from typing import TextIO

from fedmedclip.logs import LogFormat, event
from fedmedclip.logs import configure_logging as configure_shared_logging

__all__ = ["configure_logging", "event"]


def configure_logging(fmt: LogFormat = "text", level: str = "INFO", stream: TextIO | None = None) -> None:
    """Structured logs to ``stream`` (stderr) in ``fmt``; replaces earlier handlers."""
    configure_shared_logging(fmt, level, stream)
    # Alembic announces every plugin it loads at INFO; the migrations it runs are still logged.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(logging.WARNING, logging.getLogger().level))
