"""``POST /v1/sites/{site}/predict``: images in as multipart, per-image ensemble predictions out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.requests import ClientDisconnect

from inference_api import service
from inference_api.decoding import Upload
from inference_api.errors import BadRequestError, UnsupportedMediaTypeError, error_responses
from inference_api.multipart import read_uploads
from inference_api.routes.deps import ServicesDep, SiteDep
from inference_api.schemas import PredictResponse

router = APIRouter(prefix="/v1", tags=["predict"])

# The body is parsed by hand (after the key and the site are checked, so an unauthenticated client cannot
# make the server parse a large upload); this documents it for the OpenAPI document and its clients.
_MULTIPART: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 16,  # set from max_images when the app builds its document
                            "items": {"type": "string", "format": "binary", "minLength": 1},
                            "description": "PNG, JPEG or DICOM images, one part each.",
                        }
                    },
                }
            }
        },
    }
}


@router.post(
    "/sites/{site}/predict",
    response_model=PredictResponse,
    responses=error_responses(400, 401, 403, 404, 409, 413, 415, 422, 503),
    openapi_extra=_MULTIPART,
)
async def predict(request: Request, site: SiteDep, services: ServicesDep) -> PredictResponse:
    """Classify each image with the site's personalised ensemble: the predicted class, the ensemble and
    component probabilities, α, and the bundle version that answered."""
    service.loaded_bundle(services, site)  # 404 / 409 before reading any upload
    uploads = await _read_uploads(request, services.settings.max_images)
    return await service.predict(services, site, uploads)


async def _read_uploads(request: Request, max_images: int) -> list[Upload]:
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UnsupportedMediaTypeError("send the images as multipart/form-data, one file part each (field 'files')")
    try:
        return await read_uploads(content_type, request.stream(), max_images)
    except ClientDisconnect as error:  # the client gave up mid-upload; nobody reads this answer
        raise BadRequestError("the client disconnected during the upload") from error
