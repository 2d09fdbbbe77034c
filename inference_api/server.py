"""Running the app under uvicorn: the shared log schema, a port-0 friendly startup line, graceful shutdown."""

from __future__ import annotations

import socket

import uvicorn

from fedmedclip.logs import configure_logging
from fedmedclip.model.backbone import Backbone, BackboneSpec, load_backbone
from inference_api.app import create_app
from inference_api.settings import ApiSettings

_GRACE_S = 10  # in-flight requests get this long to finish after SIGTERM


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


def prepare(settings: ApiSettings) -> Backbone:
    """Set up the shared logs and load the backbone, before uvicorn starts.

    Loaded outside uvicorn's lifespan so that missing weights stop the command with
    ``WeightsUnavailableError`` (one line from the CLI) instead of a traceback from inside the event loop.
    """
    configure_logging("json" if settings.log_json else "text", settings.log_level.upper())
    return load_backbone(
        BackboneSpec(settings.model, settings.weights, settings.preprocess, settings.seed), settings.device
    )


def run(settings: ApiSettings, host: str, port: int, backbone: Backbone) -> int:
    """Serve until SIGINT/SIGTERM; 1 when the server could not start (e.g. the port is taken)."""
    config = uvicorn.Config(
        create_app(settings, backbone=backbone),
        host=host,
        port=port,
        log_level=settings.log_level,
        log_config=None,  # uvicorn's loggers propagate to ours: one schema, no plain lines in between
        access_log=False,  # requests are counted in /metrics; access logs would name patients' uploads
        timeout_graceful_shutdown=_GRACE_S,
        server_header=False,
        ssl_certfile=settings.tls_certfile,
        ssl_keyfile=settings.tls_keyfile,
    )
    server = _Server(config)
    server.run()
    return 0 if server.started else 1
