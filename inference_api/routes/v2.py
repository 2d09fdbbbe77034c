"""The Open Inference Protocol (KServe v2) REST face: the same keys, limits and data plane as /v1.

Every model route also exists under ``/versions/{version}``; a version other than the one being served is a
404 that names the served one. Errors are ``{"error": <message>}``, as the protocol's clients expect.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from inference_api import oip, service
from inference_api.errors import UnsupportedMediaTypeError, oip_error_responses
from inference_api.registry import LoadedBundle
from inference_api.routes.deps import ServicesDep, SiteDep
from inference_api.service import Services

router = APIRouter(prefix="/v2", tags=["open inference protocol"])
_MODEL = "/models/{site}"
_VERSIONED = "/models/{site}/versions/{version}"


@router.get("/health/live")
async def live() -> dict[str, bool]:
    """The process is up (the protocol's liveness; no key needed)."""
    return {"live": True}


@router.get("/health/ready", responses={503: {"description": "Not ready."}})
async def ready(request: Request) -> JSONResponse:
    """Ready when the backbone is loaded and at least one site serves a verified bundle (no key needed)."""
    state = service.readiness(getattr(request.app.state, "services", None))
    return JSONResponse({"ready": state.ready}, status_code=200 if state.ready else 503)


@router.get("")
async def server_metadata() -> dict[str, Any]:
    """Server name, version and the protocol extensions it supports (no key needed)."""
    return oip.server_metadata()


_META_ERRORS = oip_error_responses(401, 403, 404, 409, 422, 503)


@router.get(_MODEL, responses=_META_ERRORS)
async def model_metadata(site: SiteDep, services: ServicesDep) -> dict[str, Any]:
    """One site's model: its served version, input and outputs, and its class labels."""
    return oip.model_metadata(site, service.pinned_bundle(services, site, None).bundle)


@router.get(_VERSIONED, responses=_META_ERRORS)
async def version_metadata(site: SiteDep, version: str, services: ServicesDep) -> dict[str, Any]:
    """The same, only if ``version`` is the version being served (404 naming the served one otherwise)."""
    return oip.model_metadata(site, service.pinned_bundle(services, site, version).bundle)


@router.get(_MODEL + "/ready", responses=_META_ERRORS)
async def model_ready(site: SiteDep, services: ServicesDep) -> dict[str, Any]:
    """200 when the site serves a verified bundle; 404/409 otherwise."""
    return _ready(site, service.pinned_bundle(services, site, None))


@router.get(_VERSIONED + "/ready", responses=_META_ERRORS)
async def version_ready(site: SiteDep, version: str, services: ServicesDep) -> dict[str, Any]:
    """200 when the site serves a verified bundle of ``version``; 404/409 otherwise."""
    return _ready(site, service.pinned_bundle(services, site, version))


def _ready(site: str, loaded: LoadedBundle) -> dict[str, Any]:
    return {"name": site, "version": loaded.bundle.version, "ready": True}


_INFER_ERRORS = oip_error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503)
# The body is parsed by hand (after the key and site checks); this documents its JSON form.
_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "shape", "datatype"],
                                "properties": {
                                    "name": {"type": "string", "enum": [oip.INPUT]},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "datatype": {"type": "string", "enum": ["BYTES"]},
                                    "parameters": {"type": "object"},
                                    "data": {
                                        "type": "array",
                                        "items": {"type": "string", "format": "byte"},
                                        "description": "Base64 encoded PNG, JPEG or DICOM files; or send them "
                                        "as binary tensor data after the JSON (Inference-Header-Content-Length).",
                                    },
                                },
                            },
                        },
                        "outputs": {"type": "array", "items": {"type": "object"}},
                    },
                }
            }
        },
    }
}


@router.post(_MODEL + "/infer", responses=_INFER_ERRORS, openapi_extra=_INFER_BODY)
async def infer(request: Request, site: SiteDep, services: ServicesDep) -> Response:
    """Classify the encoded images of the BYTES input ``image`` with the site's personalised ensemble."""
    return await _infer(request, site, services, None)


@router.post(_VERSIONED + "/infer", responses=_INFER_ERRORS, openapi_extra=_INFER_BODY)
async def infer_version(request: Request, site: SiteDep, version: str, services: ServicesDep) -> Response:
    """The same, answered only by ``version`` (404 naming the served version otherwise)."""
    return await _infer(request, site, services, version)


async def _infer(request: Request, site: str, services: Services, version: str | None) -> Response:
    loaded = service.pinned_bundle(services, site, version)  # 404 / 409 before reading the body
    encoding = request.headers.get("content-encoding", "identity").lower()
    if encoding != "identity":
        raise UnsupportedMediaTypeError(f"Content-Encoding {encoding[:40]!r} is not supported; send it uncompressed")
    limit = services.settings.max_images
    body = await oip.read_body(request.stream(), request.headers.get(oip.HEADER_LENGTH), limit)
    parsed = oip.parse_infer_request(body, request.headers.get(oip.HEADER_LENGTH), limit)
    del body  # the uploads hold what is needed; let the rest go before the model runs
    oip.check_outputs(site, loaded.bundle, parsed)  # a bad output name fails before any decoding
    classified = await service.classify(
        services, site, parsed.uploads, version=version, empty_hint=f"the input {oip.INPUT!r} has no elements"
    )
    content, header_length = oip.infer_response(site, classified.loaded.bundle, classified.output, parsed)
    if header_length is None:
        return Response(content, media_type="application/json")
    headers = {"Inference-Header-Content-Length": str(header_length)}
    return Response(content, media_type="application/octet-stream", headers=headers)
