"""Running the app under uvicorn: logging, a port-0 friendly startup line, graceful shutdown."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from inference_api.app import create_app
from inference_api.settings import ApiSettings, load_settings

# How `serve --workers N` hands its --config to the worker processes, which build their own settings.
CONFIG_FILE_ENV = "FEDMEDCLIP_API_CONFIG_FILE"

_GRACE_S = 10  # in-flight requests get this long to finish after SIGTERM


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: ApiSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter() if settings.log_json else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    logger = logging.getLogger("inference_api")
    logger.handlers[:] = [handler]
    logger.setLevel(settings.log_level.upper())
    logger.propagate = False


class _Server(uvicorn.Server):
    """Prints the bound URL once the app is ready: with ``--port 0`` this is how callers learn the port."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:  # startup failed (e.g. the port is taken)
            return
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                scheme = "https" if self.config.is_ssl else "http"
                print(f"inference API serving on {scheme}://{shown}:{port}", flush=True)
                return


def run(settings: ApiSettings, host: str, port: int, workers: int = 1) -> int:
    configure_logging(settings)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": settings.log_level,
        "access_log": False,  # requests are counted in /metrics; access logs would name patients' uploads
        "timeout_graceful_shutdown": _GRACE_S,
        "server_header": False,
        "ssl_certfile": settings.tls_certfile,
        "ssl_keyfile": settings.tls_keyfile,
    }
    if workers > 1:
        return _run_workers(options, workers)
    server = _Server(uvicorn.Config(create_app(settings), **options))
    server.run()
    return 0 if server.started else 1


def worker_app() -> FastAPI:
    """The app of one worker process (``serve --workers N``): each reads the settings itself, loads the
    backbone once, and reads the same bundle folders, which nothing in the API ever writes."""
    settings = load_settings(os.environ.get(CONFIG_FILE_ENV))
    configure_logging(settings)
    return create_app(settings)


def _run_workers(options: dict[str, Any], workers: int) -> int:
    # uvicorn's supervisor binds the socket once and spawns the workers, which accept on it in turn; it
    # restarts a worker that dies and forwards SIGTERM so each one drains its requests.
    config = uvicorn.Config("inference_api.server:worker_app", factory=True, workers=workers, **options)
    sock = config.bind_socket()
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if config.is_ssl else "http"
    print(
        f"inference API serving on {scheme}://{shown}:{port} ({workers} workers; /readyz says when they are up)",
        flush=True,
    )
    Multiprocess(config, sockets=[sock]).run()
    return 0
