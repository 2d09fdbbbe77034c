"""The app factory. Configuration is read once, outside; models are loaded in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from fedmedclip import __version__
from fedmedclip.model.backbone import Backbone, BackboneSpec, WeightsUnavailableError, load_backbone
from inference_api.batcher import MicroBatcher
from inference_api.errors import install_error_handlers
from inference_api.keys import KeyRing
from inference_api.metrics import ApiMetrics
from inference_api.middleware import BodySizeLimit, MetricsAndHeaders
from inference_api.registry import ModelRegistry
from inference_api.routes import ops, page, predict, sites, v2
from inference_api.routes.page import STATIC_DIR
from inference_api.service import Services
from inference_api.settings import ApiSettings

log = logging.getLogger("inference_api")


def create_app(settings: ApiSettings, *, backbone: Backbone | None = None) -> FastAPI:
    """Build the app. ``backbone`` lets tests and benchmarks share one already loaded; otherwise the
    lifespan loads the one ``settings`` names."""
    metrics = ApiMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await _start(settings, metrics, backbone)
        app.state.services = services
        watcher = asyncio.create_task(services.registry.watch(settings.reload_interval_s), name="bundle-watcher")
        try:
            yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            await services.batcher.stop()
            app.state.services = None
            log.info("inference API stopped")

    docs = settings.enable_docs
    app = FastAPI(
        title="FedMedCLIP inference API",
        version=__version__,
        summary="Each site's personalised classifier (frozen CLIP + federated FAM + private head) over REST.",
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url="/docs/oauth2-redirect" if docs else None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.services = None
    app.state.keyring = KeyRing(settings.api_keys) if settings.api_keys else None
    install_error_handlers(app)
    for router in (predict.router, sites.router, v2.router, ops.router, page.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _document_limits(app, settings)
    # Added last = outermost: the size limit applies before anything reads the body.
    app.add_middleware(MetricsAndHeaders, metrics=metrics)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    return app


def _document_limits(app: FastAPI, settings: ApiSettings) -> None:
    """Put this deployment's image-count limit into the OpenAPI document (the routes' schemas are static)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # cached by FastAPI: adjusted once, in place
            for path, operation in schema.get("paths", {}).items():
                post = operation.get("post", {})
                for content in post.get("requestBody", {}).get("content", {}).values():
                    _set_max_items(path, content.get("schema", {}), settings.max_images)
        return app.openapi_schema or build()

    app.openapi = openapi  # type: ignore[method-assign]


def _set_max_items(path: str, schema: dict[str, Any], max_images: int) -> None:
    files = schema.get("properties", {}).get("files")
    if path.endswith("/predict") and files is not None:
        files["maxItems"] = max_images
    inputs = schema.get("properties", {}).get("inputs", {})
    data = inputs.get("items", {}).get("properties", {}).get("data")
    if path.endswith("/infer") and data is not None:
        data["maxItems"] = max_images


async def _start(settings: ApiSettings, metrics: ApiMetrics, backbone: Backbone | None) -> Services:
    if backbone is None:
        spec = BackboneSpec(settings.model, settings.weights, settings.preprocess, settings.seed)
        log.info("loading backbone %s", spec.describe())
        try:
            backbone = await anyio.to_thread.run_sync(load_backbone, spec, settings.device)
        except (WeightsUnavailableError, ValueError) as error:
            log.error("cannot load the backbone: %s", error)  # the one line an operator needs
            raise
    log.info(
        "backbone %s on %s, weights digest %s…", backbone.spec.describe(), backbone.device, backbone.weights_digest[:12]
    )
    if not settings.bundle_root.is_dir():
        log.warning("bundle root %s does not exist yet; not ready until an agent publishes", settings.bundle_root)
    registry = ModelRegistry(settings.bundle_root, backbone, metrics, site_timeout_s=settings.bundle_scan_timeout_s)
    await anyio.to_thread.run_sync(registry.scan)
    batcher = MicroBatcher(
        backbone.encode_images,
        max_batch=settings.max_batch,
        max_wait_s=settings.batch_wait_ms / 1000,
        max_queued=settings.max_queued_images,
        on_batch=metrics.batch_images.observe,
    )
    await batcher.start()
    ready = [s.name for s in registry.sites() if s.loaded is not None]
    log.info("serving %d site(s) from %s: %s", len(ready), settings.bundle_root, ", ".join(ready) or "none yet")
    return Services(settings=settings, registry=registry, batcher=batcher, metrics=metrics)
