"""Running the app under uvicorn: the shared log schema, a port-0 friendly startup line, graceful shutdown,
and ``--workers N`` under uvicorn's supervisor."""

from __future__ import annotations

import os
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.supervisors import Multiprocess

from fedmedclip.logs import configure_logging
from fedmedclip.model.backbone import Backbone, BackboneSpec, load_backbone
from inference_api.app import create_app
from inference_api.http_protocol import http_protocol
from inference_api.settings import ApiSettings, load_settings

# How `serve --workers N` hands its --config to the worker processes, which build their own settings.
CONFIG_FILE_ENV = "FEDMEDCLIP_API_CONFIG_FILE"

_GRACE_S = 10  # in-flight requests get this long to finish after SIGTERM


class _Server(uvicorn.Server):
    """Prints the bound URL once the app is ready: with ``--port 0`` this is how callers learn the port."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:  # startup failed (e.g. the port is taken)
            return
        for server in self.servers:
            for sock in server.sockets:
                print(f"inference API serving on {_url(self.config, sock)}", flush=True)
                return


def _url(config: uvicorn.Config, sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if config.is_ssl else 'http'}://{shown}:{port}"


def _configure_logging(settings: ApiSettings) -> None:
    configure_logging("json" if settings.log_json else "text", settings.log_level.upper())


def prepare(settings: ApiSettings) -> Backbone:
    """Set up the shared logs and load the backbone, before uvicorn starts.

    Loaded outside uvicorn's lifespan so that missing weights stop the command with
    ``WeightsUnavailableError`` (one line from the CLI) instead of a traceback from inside the event loop.
    """
    _configure_logging(settings)
    return load_backbone(
        BackboneSpec(settings.model, settings.weights, settings.preprocess, settings.seed), settings.device
    )


def _options(settings: ApiSettings, host: str, port: int) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "log_level": settings.log_level,
        "log_config": None,  # uvicorn's loggers propagate to ours: one schema, no plain lines in between
        "access_log": False,  # requests are counted in /metrics; access logs would name patients' uploads
        "timeout_graceful_shutdown": _GRACE_S,
        "server_header": False,
        "http": http_protocol(),  # uvicorn's own 400s in our JSON error format
        "ssl_certfile": settings.tls_certfile,
        "ssl_keyfile": settings.tls_keyfile,
    }


def run(settings: ApiSettings, host: str, port: int, backbone: Backbone, workers: int = 1) -> int:
    """Serve until SIGINT/SIGTERM; 1 when the server could not start (e.g. the port is taken).

    With ``workers > 1`` the backbone loaded by ``prepare`` only proved the weights load; each worker loads
    its own copy.
    """
    options = _options(settings, host, port)
    if workers > 1:
        del backbone
        return _run_workers(options, workers)
    server = _Server(uvicorn.Config(create_app(settings, backbone=backbone), **options))
    server.run()
    return 0 if server.started else 1


def worker_app() -> FastAPI:
    """The app of one worker process (``serve --workers N``): each reads the settings itself, loads the
    backbone once, and reads the same bundle folders, which nothing in the API ever writes."""
    settings = load_settings(os.environ.get(CONFIG_FILE_ENV))
    _configure_logging(settings)
    return create_app(settings)


def _run_workers(options: dict[str, Any], workers: int) -> int:
    # uvicorn's supervisor binds the socket once and spawns the workers, which accept on it in turn; it
    # restarts a worker that dies and forwards SIGTERM so each one drains its requests.
    config = uvicorn.Config("inference_api.server:worker_app", factory=True, workers=workers, **options)
    sock = config.bind_socket()
    print(
        f"inference API serving on {_url(config, sock)} ({workers} workers; /readyz says when they are up)",
        flush=True,
    )
    Multiprocess(config, sockets=[sock]).run()
    return 0
