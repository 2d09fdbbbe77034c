"""Every error the API returns, and the one place that turns exceptions into JSON responses.

A response body is always ``{"error": <code>, "message": <text for a person>}``. Nothing here ever puts a
traceback, a file path on the server, or an exception's repr into a response; unexpected failures are logged
with their traceback and answered with a bare 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("inference_api")


class ErrorBody(BaseModel):
    error: str
    message: str


class OipErrorBody(BaseModel):
    """The Open Inference Protocol's error body (under /v2)."""

    error: str


class ApiError(StarletteHTTPException):
    """Base of the API's own errors. A subclass of Starlette's, so it also passes through FastAPI's
    body-parsing wrapper (which turns any other exception into a generic 400)."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=self.status, detail=message, headers=headers)
        self.message = message


class BadRequestError(ApiError):
    status, code = 400, "bad_request"


class UnauthorizedError(ApiError):
    status, code = 401, "unauthorized"


class ForbiddenError(ApiError):
    status, code = 403, "forbidden"


class UnknownSiteError(ApiError):
    status, code = 404, "unknown_site"


class UnknownVersionError(ApiError):
    status, code = 404, "unknown_version"


class NoBundleError(ApiError):
    status, code = 409, "no_bundle"


class PayloadTooLargeError(ApiError):
    status, code = 413, "payload_too_large"


class TooManyImagesError(ApiError):
    status, code = 413, "too_many_images"


class UnsupportedMediaTypeError(ApiError):
    status, code = 415, "unsupported_media_type"


class BadImageError(ApiError):
    status, code = 422, "bad_image"


class EmptyUploadError(ApiError):
    status, code = 422, "empty_file"


class NoImagesError(ApiError):
    status, code = 422, "no_images"


class BusyError(ApiError):
    status, code = 503, "busy"


# The Open Inference Protocol's error body is ``{"error": <text>}``: its clients (tritonclient, KServe's)
# show that field to the user, so under /v2 it carries the message rather than the code.
OIP_PREFIX = "/v2"


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None, *, path: str = ""
) -> JSONResponse:
    if path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/"):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


# For the OpenAPI document: the error statuses a route can answer, all with the same body.
def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": _DESCRIPTIONS[status]} for status in statuses}


def oip_error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": OipErrorBody, "description": _DESCRIPTIONS[status]} for status in statuses}


_DESCRIPTIONS = {
    400: "Malformed request.",
    401: "Missing or invalid API key.",
    403: "The key may not use this site.",
    404: "Unknown site, or a model version that is not served.",
    409: "The site has no verified bundle yet.",
    413: "Request body or image count over the limit.",
    415: "Not multipart/form-data, or an image that is not PNG, JPEG or DICOM.",
    422: "Invalid request or undecodable image.",
    503: "Not ready, or too busy: retry later.",
}


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers, path=request.url.path)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    return error_response(exc.status_code, code, message, getattr(exc, "headers", None), path=request.url.path)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for problem in exc.errors()[:5]:
        where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return error_response(422, "invalid_request", "; ".join(parts) or "invalid request", path=request.url.path)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal server error", path=request.url.path)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
