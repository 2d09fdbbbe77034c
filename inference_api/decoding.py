"""Turning uploaded bytes into model input: PNG, JPEG or DICOM only, recognised by content, never by name.

The file name and the part's declared content type are the client's word; the bytes decide. Restricting
Pillow to two formats keeps its many other decoders (and their bugs) out of reach of uploads.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image, ImageOps

from fedmedclip.data.dicom import decode_dicom, looks_like_dicom
from fedmedclip.data.images import ImageDecodeError, to_rgb
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


def decode_upload(upload: Upload, max_pixels: int, draft_side: int | None = None) -> Image.Image:
    """One upload as an RGB image, or a 415/422 ``ApiError`` that names the file and says why.

    With ``draft_side``, a JPEG much larger than that is decoded at a reduced scale (1/2, 1/4 or 1/8, done
    by the JPEG decoder itself, so far cheaper than decoding in full and resizing), never below
    ``2 × draft_side`` on its shorter side; the model's own resize then works from that."""
    name = _display_name(upload.filename)
    if not upload.data:
        raise EmptyUploadError(f"{name} is empty")
    kind = sniff(upload.data)
    if kind is None:
        raise UnsupportedMediaTypeError(f"{name} is not a PNG, JPEG or DICOM image")
    try:
        if kind == "dicom":
            return decode_dicom(upload.data, name, max_pixels=max_pixels)
        return _decode_raster(upload.data, name, kind, max_pixels, 2 * draft_side if draft_side else None)
    except ImageDecodeError as error:
        raise BadImageError(f"{name} cannot be decoded: {error.reason}") from error


def _decode_raster(data: bytes, name: str, kind: str, max_pixels: int, min_side: int | None) -> Image.Image:
    """A PNG or JPEG opened once: size checked from the header (a small compressed file can decode to
    gigabytes), then decoded with the same steps as ``fedmedclip.data.images.decode_image``."""
    try:
        with Image.open(io.BytesIO(data), formats=(kind.upper(),)) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise BadImageError(f"{name} is {width}x{height} pixels, over the limit of {max_pixels}")
            scale = min(width, height) / min_side if min_side else 0
            if kind == "jpeg" and scale >= 2:  # draft keeps the result at least the requested size
                opened.draft("RGB", (max(1, round(width / scale)), max(1, round(height / scale))))
            opened.load()
            return to_rgb(ImageOps.exif_transpose(opened))
    except _DECODE_ERRORS as error:
        raise BadImageError(f"{name} cannot be decoded: {error.__class__.__name__}: {error}") from error


_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def prepare_batch(
    uploads: Sequence[Upload],
    preprocess: Callable[[Image.Image], torch.Tensor],
    max_pixels: int,
    *,
    draft_side: int | None = None,
) -> torch.Tensor:
    """Decode and preprocess every upload (N × 3 × H × W); the first bad file rejects the request."""
    return torch.stack([preprocess(decode_upload(upload, max_pixels, draft_side)) for upload in uploads])


def _display_name(filename: str | None) -> str:
    if not filename:
        return "the upload"
    cleaned = "".join(ch for ch in filename if ch.isprintable())[:120]
    return repr(cleaned)
