"""Safe image decoding shared by every adapter, the embedding pass and the inference API.

One function turns "a file that should be an image" into a fully decoded RGB ``PIL.Image`` or a single
``ImageDecodeError``. Pillow decodes lazily and raises half a dozen unrelated exception types for broken
input (``UnidentifiedImageError``, ``OSError`` for truncation, ``SyntaxError`` for bad PNG chunks...), so
without this a corrupt file would surface deep inside a DataLoader worker as an arbitrary error. Callers
catch ``ImageDecodeError``, report the path and reason, and skip the file (docs/design.md §8).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fedmedclip.data.decode_errors import ImageDecodeError
from fedmedclip.data.dicom import decode_dicom, looks_like_dicom

__all__ = ["IMAGE_SUFFIXES", "ImageDecodeError", "decode_image", "is_image_path", "load_image", "to_rgb"]

IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

# What Pillow raises for unreadable, truncated, oversized or malformed input.
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    Image.DecompressionBombError,
)
# Single-channel modes whose values do not fit 8 bits; Pillow's own RGB conversion clips them at 255.
_WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def is_image_path(path: str | os.PathLike[str]) -> bool:
    """Whether the file name has an image suffix (case-insensitive). Says nothing about the content."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Read and fully decode ``path`` as an RGB image, or raise ``ImageDecodeError``."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ImageDecodeError(path, error.strerror or error.__class__.__name__) from error
    return decode_image(data, path)


def decode_image(data: bytes, path: str | os.PathLike[str] = "<bytes>") -> Image.Image:
    """Decode encoded image bytes (``path`` only names them in errors); DICOM goes to ``data.dicom``.

    Decoding from bytes lets a caller hash exactly the bytes it decodes: the embedding cache keys vectors by
    content digest, and reading the file twice could pair one version's digest with another's pixels.
    """
    if not data:
        raise ImageDecodeError(path, "empty file")
    if looks_like_dicom(data):  # Pillow cannot read DICOM; pydicom is imported only when one arrives
        return decode_dicom(data, path)
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()  # decode now: Pillow is lazy and would otherwise fail later, far from here
            image = ImageOps.exif_transpose(opened)  # phone/camera photos carry their rotation in EXIF
            return to_rgb(image)
    except Image.UnidentifiedImageError as error:
        raise ImageDecodeError(path, "not a recognised image format") from error
    except _DECODE_ERRORS as error:
        raise ImageDecodeError(path, f"{error.__class__.__name__}: {error}") from error


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without the silent damage of a bare ``convert("RGB")``.

    - 16-bit and float greyscale (common for radiographs) are stretched from their own min..max to 0..255;
      Pillow's conversion would clip everything above 255 to white.
    - Transparent images are composited onto black, so hidden colour under alpha 0 does not leak in.
    """
    if image.mode == "RGB":
        return image.copy()
    if image.mode in _WIDE_GREY_MODES:
        return _stretch_grey(image).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _stretch_grey(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Image.new("L", image.size, 0)
    low, high = float(finite.min()), float(finite.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    scaled = np.nan_to_num((values - low) * scale, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))  # uint8 2-D → mode L
