"""Turning uploaded bytes into model input: PNG, JPEG or DICOM only, recognised by content, never by name.

The file name and the part's declared content type are the client's word; the bytes decide. Restricting
Pillow to two formats keeps its many other decoders (and their bugs) out of reach of uploads.

Work per upload is bounded before any pixel is decoded: the header's size is checked against the pixel
limit (by default 256 × the model's input side², ``default_max_pixels``) and the aspect-ratio limit, which
also bounds the image after preprocessing (resizing the shorter side to the model's input makes the longer
one at most ``max_aspect_ratio`` × that side). Large JPEGs and DICOMs are decoded at a reduced size. Any
failure while decoding or preprocessing is a 4xx naming the file, never a 500 (docs/design.md §6).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image, ImageOps

from fedmedclip.data.dicom import decode_dicom, looks_like_dicom
from fedmedclip.data.images import ImageDecodeError, to_rgb
from inference_api.errors import ApiError, BadImageError, EmptyUploadError, UnsupportedMediaTypeError

log = logging.getLogger("inference_api.decoding")

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


DEFAULT_MAX_ASPECT_RATIO = 20.0
_PIXELS_PER_INPUT = 256  # the default pixel limit, in model inputs: 12.8 MP for a 224 px model


def default_max_pixels(input_side: int) -> int:
    """The default pixel limit for a model whose input is ``input_side``² pixels: room for a 3000 × 4000
    radiograph at 224 px, while an upload can no longer cost seconds of CPU for a few hundred kilobytes."""
    return _PIXELS_PER_INPUT * input_side * input_side


@dataclass(frozen=True)
class Limits:
    """What one upload may cost. ``input_side`` is the model's input (the draft target, and the scale
    of the aspect-ratio bound); ``None`` decodes in full and checks no aspect ratio."""

    max_pixels: int
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    input_side: int | None = None


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


def decode_upload(
    upload: Upload, max_pixels: int, draft_side: int | None = None, *, max_aspect_ratio: float = 0
) -> Image.Image:
    """One upload as an RGB image, or a 415/422 ``ApiError`` that names the file and says why.

    With ``draft_side``, a JPEG much larger than that is decoded at a reduced scale (1/2, 1/4 or 1/8, done
    by the JPEG decoder itself, so far cheaper than decoding in full and resizing), and a DICOM by averaging
    whole blocks of pixels, never below ``2 × draft_side`` on its shorter side; the model's own resize then
    works from that. With ``max_aspect_ratio``, a thinner image is refused from its header."""
    name = _display_name(upload.filename)
    if not upload.data:
        raise EmptyUploadError(f"{name} is empty")
    kind = sniff(upload.data)
    if kind is None:
        raise UnsupportedMediaTypeError(f"{name} is not a PNG, JPEG or DICOM image")
    min_side = 2 * draft_side if draft_side else None
    try:
        if kind == "dicom":
            image = decode_dicom(upload.data, name, max_pixels=max_pixels, min_side=min_side)
            # decode_dicom checks the pixel count from the tags; the shape is checked before preprocessing.
            check_aspect_ratio(name, *image.size, max_aspect_ratio)
            return image
        return _decode_raster(upload.data, name, kind, max_pixels, min_side, max_aspect_ratio)
    except ImageDecodeError as error:
        raise BadImageError(f"{name} cannot be decoded: {error.reason}") from error


def check_aspect_ratio(name: str, width: int, height: int, max_aspect_ratio: float) -> None:
    """422 for an image thinner than ``max_aspect_ratio``:1 (0: no limit). Resizing the shorter side of a
    2,000,000 × 1 image to 224 px would make it 448 million pixels wide."""
    if max_aspect_ratio <= 0:
        return
    if width < 1 or height < 1:
        raise BadImageError(f"{name} is {width}x{height} pixels: an image needs at least one pixel each way")
    ratio = max(width, height) / min(width, height)
    if ratio > max_aspect_ratio:
        raise BadImageError(
            f"{name} is {width}x{height} pixels: its aspect ratio of {ratio:.0f}:1 is over the limit of "
            f"{max_aspect_ratio:g}:1"
        )


def _decode_raster(
    data: bytes, name: str, kind: str, max_pixels: int, min_side: int | None, max_aspect_ratio: float
) -> Image.Image:
    """A PNG or JPEG opened once: size checked from the header (a small compressed file can decode to
    gigabytes), then decoded with the same steps as ``fedmedclip.data.images.decode_image``."""
    try:
        with Image.open(io.BytesIO(data), formats=(kind.upper(),)) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                raise BadImageError(f"{name} is {width}x{height} pixels, over the limit of {max_pixels}")
            check_aspect_ratio(name, width, height, max_aspect_ratio)
            scale = min(width, height) / min_side if min_side else 0
            if kind == "jpeg" and scale >= 2:  # draft keeps the result at least the requested size
                opened.draft("RGB", (max(1, round(width / scale)), max(1, round(height / scale))))
            opened.load()
            return to_rgb(ImageOps.exif_transpose(opened))
    except _DECODE_ERRORS as error:
        raise BadImageError(f"{name} cannot be decoded: {error.__class__.__name__}: {error}") from error


_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def prepare_batch(
    uploads: Sequence[Upload], preprocess: Callable[[Image.Image], torch.Tensor], limits: Limits
) -> torch.Tensor:
    """Decode and preprocess every upload (N × 3 × H × W); the first bad file rejects the request."""
    tensors: list[torch.Tensor] = []
    for upload in uploads:
        tensor = prepare_one(upload, preprocess, limits)
        if tensors and tensor.shape != tensors[0].shape:
            raise BadImageError(f"{_display_name(upload.filename)} preprocessed to an unexpected shape")
        tensors.append(tensor)
    return torch.stack(tensors)


def prepare_one(upload: Upload, preprocess: Callable[[Image.Image], torch.Tensor], limits: Limits) -> torch.Tensor:
    """One upload as model input. Whatever decoding or preprocessing raises (``MemoryError`` included)
    becomes a 422 naming the file: a hostile upload must never be a 500, nor close the connection."""
    try:
        image = decode_upload(upload, limits.max_pixels, limits.input_side, max_aspect_ratio=limits.max_aspect_ratio)
        return preprocess(image)
    except ApiError:
        raise
    except Exception as error:  # deliberately everything: see the docstring
        name = _display_name(upload.filename)
        log.warning("upload %s failed in decoding or preprocessing", name, exc_info=error)
        raise BadImageError(f"{name} cannot be processed: {error.__class__.__name__}") from error


def _display_name(filename: str | None) -> str:
    if not filename:
        return "the upload"
    cleaned = "".join(ch for ch in filename if ch.isprintable())[:120]
    return repr(cleaned)
