"""Turning uploaded bytes into model input: PNG, JPEG or DICOM only, recognised by content, never by name.

The file name and the part's declared content type are the client's word; the bytes decide. Restricting
Pillow to two formats keeps its many other decoders (and their bugs) out of reach of uploads.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from fedmedclip.data.dicom import decode_dicom, looks_like_dicom
from fedmedclip.data.images import ImageDecodeError, decode_image
from inference_api.errors import BadImageError, EmptyUploadError, UnsupportedMediaTypeError

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


@dataclass(frozen=True)
class Upload:
    filename: str | None
    data: bytes


def sniff(data: bytes) -> str | None:
    """``"png"``, ``"jpeg"``, ``"dicom"``, or ``None`` for anything else."""
    if data.startswith(_PNG):
        return "png"
    if data.startswith(_JPEG):
        return "jpeg"
    if looks_like_dicom(data):
        return "dicom"
    return None


def decode_upload(upload: Upload, max_pixels: int) -> Image.Image:
    """One upload as an RGB image, or a 415/422 ``ApiError`` that names the file and says why."""
    name = _display_name(upload.filename)
    if not upload.data:
        raise EmptyUploadError(f"{name} is empty")
    kind = sniff(upload.data)
    if kind is None:
        raise UnsupportedMediaTypeError(f"{name} is not a PNG, JPEG or DICOM image")
    try:
        if kind == "dicom":
            return decode_dicom(upload.data, name, max_pixels=max_pixels)
        _check_size(upload.data, name, max_pixels)
        return decode_image(upload.data, name)
    except ImageDecodeError as error:
        raise BadImageError(f"{name} cannot be decoded: {error.reason}") from error


def _check_size(data: bytes, name: str, max_pixels: int) -> None:
    # Read only the header: a small compressed file can decode to gigabytes.
    try:
        with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as header:
            width, height = header.size
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise BadImageError(f"{name} cannot be decoded: {error.__class__.__name__}") from error
    if width * height > max_pixels:
        raise BadImageError(f"{name} is {width}x{height} pixels, over the limit of {max_pixels}")


def prepare_batch(
    uploads: Sequence[Upload], preprocess: Callable[[Image.Image], torch.Tensor], max_pixels: int
) -> torch.Tensor:
    """Decode and preprocess every upload (N × 3 × H × W); the first bad file rejects the request."""
    return torch.stack([preprocess(decode_upload(upload, max_pixels)) for upload in uploads])


def _display_name(filename: str | None) -> str:
    if not filename:
        return "the upload"
    cleaned = "".join(ch for ch in filename if ch.isprintable())[:120]
    return repr(cleaned)
