"""DICOM decoding (docs/design.md §8): a Part-10 file's first frame as an 8-bit RGB ``PIL.Image``.

What it does, in the order a viewer would:
1. the modality transform (Rescale Slope/Intercept or a Modality LUT) turns stored values into real units;
2. windowing: the file's first Window Center/Width (the linear DICOM formula, PS3.3 C.11.2.1.2) when present,
   otherwise the image's own min..max — so a CT without window tags is not all grey;
3. MONOCHROME1 (bright = low value, common for CR/DX) is inverted so that every image reads like MONOCHROME2;
4. colour images (RGB, YBR converted by pydicom, PALETTE COLOR through its lookup table) are scaled to 8 bits.
Multi-frame files give their first frame. Every failure — not DICOM, truncated pixel data, a compressed
transfer syntax with no decoder installed, too many pixels — is one ``ImageDecodeError`` with a reason.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from fedmedclip.data.decode_errors import ImageDecodeError
from fedmedclip.data.dicom_codecs import hint, refusal
from fedmedclip.logs import event

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

_PREAMBLE = 128
_MAGIC = b"DICM"
DEFAULT_MAX_PIXELS = 64 * 1024 * 1024  # rows × columns × frames × samples; decoding allocates several copies
_EXPLICIT_VRS = frozenset({b"UL", b"OB", b"UI", b"SH", b"AE"})  # what a file meta element (0002,xxxx) carries

log = logging.getLogger("fedmedclip.data.dicom")
_current_file: contextvars.ContextVar[str] = contextvars.ContextVar("dicom_file", default="<bytes>")


def has_preamble(data: bytes) -> bool:
    """A DICOM Part-10 file as the standard writes it: a 128-byte preamble then ``DICM``."""
    return len(data) >= _PREAMBLE + len(_MAGIC) and data[_PREAMBLE : _PREAMBLE + len(_MAGIC)] == _MAGIC


def looks_like_dicom(data: bytes) -> bool:
    """Part-10 DICOM with its preamble, or without it (the file starts with the (0002,xxxx) meta group).

    Some PACS and older tools write the file meta group without the preamble; pydicom reads those, so we do.
    """
    if has_preamble(data):
        return True
    return len(data) >= 8 and data[:2] == b"\x02\x00" and data[4:6] in _EXPLICIT_VRS


class _PydicomToOurLog(logging.Handler):
    """pydicom logs a multi-line traceback per failed decoder plugin, without the file name. Each record
    becomes one warning line of ours naming the file; the full reason reaches the caller in the error."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            lines = record.getMessage().strip().splitlines()
            event(log, "pydicom", logging.WARNING, path=_current_file.get(), detail=lines[0] if lines else "")
        except Exception:  # a log handler must never break the decode it reports on
            self.handleError(record)


def _route_pydicom_logging() -> None:
    pydicom_log = logging.getLogger("pydicom")
    if not any(isinstance(handler, _PydicomToOurLog) for handler in pydicom_log.handlers):
        for handler in list(pydicom_log.handlers):  # pydicom's own stderr handler, if it installed one
            pydicom_log.removeHandler(handler)
        pydicom_log.addHandler(_PydicomToOurLog())
        pydicom_log.propagate = False


@contextlib.contextmanager
def _naming(path: str | os.PathLike[str]) -> Iterator[None]:
    token = _current_file.set(str(path))
    try:
        yield
    finally:
        _current_file.reset(token)


def decode_dicom(
    data: bytes,
    path: str | os.PathLike[str] = "<bytes>",
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
) -> Image.Image:
    """Decode a DICOM file's first frame to RGB, or raise ``ImageDecodeError``.

    With ``min_side``, a frame whose shorter side is at least twice that is first reduced by averaging
    k × k blocks of stored values (k as large as keeps the shorter side ≥ ``min_side``), so the float copies
    of windowing cost a k²-th: the inference API passes twice the model's input side."""
    if not data:
        raise ImageDecodeError(path, "empty file")
    if not looks_like_dicom(data):
        raise ImageDecodeError(path, "not a DICOM Part-10 file (no 'DICM' marker and no file meta group)")
    _route_pydicom_logging()
    with _naming(path):
        return _decode(data, path, max_pixels, min_side)


def _decode(data: bytes, path: str | os.PathLike[str], max_pixels: int, min_side: int | None) -> Image.Image:
    import pydicom  # imported here: only DICOM callers pay for it
    from pydicom.errors import InvalidDicomError

    try:
        # force only for files without the preamble: pydicom refuses those otherwise, though it reads them.
        dataset = pydicom.dcmread(io.BytesIO(data), force=not has_preamble(data))
    except InvalidDicomError as error:
        raise ImageDecodeError(path, f"invalid DICOM: {error}") from error
    except Exception as error:  # pydicom raises many unrelated types for truncated or corrupt headers
        raise ImageDecodeError(path, f"unreadable DICOM header ({error.__class__.__name__}: {error})") from error
    if "PixelData" not in dataset:
        raise ImageDecodeError(path, "the DICOM file has no pixel data")
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
        samples = int(getattr(dataset, "SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError) as error:
        raise ImageDecodeError(path, f"the DICOM image size is missing or invalid ({error})") from error
    if rows < 1 or columns < 1 or frames < 1:
        raise ImageDecodeError(path, f"the DICOM image size {rows}x{columns}x{frames} is invalid")
    if rows * columns * frames * samples > max_pixels:
        raise ImageDecodeError(path, f"the DICOM image has {rows}x{columns}x{frames} pixels, over the limit")
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    missing_codec = refusal(str(syntax)) if syntax else None
    if missing_codec:  # say which package fixes it, rather than pydicom's list of plugins that are absent
        raise ImageDecodeError(path, missing_codec)
    try:
        pixels = np.asarray(dataset.pixel_array)
        if frames > 1:
            pixels = pixels[0]
        if min_side and str(getattr(dataset, "PhotometricInterpretation", "")).upper() != "PALETTE COLOR":
            pixels = _reduce(pixels, min_side)  # palette indices cannot be averaged
        return _to_rgb(dataset, pixels)
    except ImageDecodeError:
        raise
    except Exception as error:  # truncated pixel data, unsupported compression, inconsistent tags...
        where = f" (transfer syntax {syntax.name})" if syntax is not None and hasattr(syntax, "name") else ""
        # One line for logs: pydicom lists each plugin's failure on its own line.
        detail = "; ".join(line.strip() for line in str(error).splitlines() if line.strip()).replace(":; ", ": ")
        fix = hint(str(syntax)) if syntax else ""
        raise ImageDecodeError(path, f"cannot decode the DICOM pixel data{where}: {detail}{fix}") from error


def _reduce(pixels: np.ndarray, min_side: int) -> np.ndarray:
    """Average k × k blocks (k ≥ 2 only when the shorter side stays ≥ ``min_side``), keeping the dtype."""
    if pixels.ndim not in (2, 3):
        return pixels
    rows, columns = pixels.shape[:2]
    k = min(rows, columns) // min_side
    if k < 2:
        return pixels
    h, w = rows // k, columns // k
    blocks = pixels[: h * k, : w * k].reshape(h, k, w, k, *pixels.shape[2:])
    mean = blocks.mean(axis=(1, 3), dtype=np.float32)  # reduced in chunks: no full-size float copy
    if np.issubdtype(pixels.dtype, np.integer):
        mean = np.rint(mean)
    return mean.astype(pixels.dtype)


def _to_rgb(dataset: Dataset, pixels: np.ndarray) -> Image.Image:
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        colour = np.asarray(apply_color_lut(pixels, dataset))
        return Image.fromarray(_stretch(colour.astype(np.float64), 0.0, float(colour.max() or 1)), "RGB")
    if pixels.ndim == 3 and pixels.shape[-1] == 3:  # RGB; pydicom has already converted YBR to RGB
        high = float(2 ** int(getattr(dataset, "BitsStored", 8)) - 1)
        return Image.fromarray(_stretch(pixels.astype(np.float64), 0.0, high), "RGB")
    if pixels.ndim != 2:
        raise ImageDecodeError("<dicom>", f"unsupported pixel layout {pixels.shape} for {photometric}")
    values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    low, high = _window(dataset, values)
    grey = _stretch(values, low, high)
    if photometric == "MONOCHROME1":
        grey = 255 - grey
    return Image.fromarray(grey, "L").convert("RGB")


def _window(dataset: Dataset, values: np.ndarray) -> tuple[float, float]:
    """The value range mapped to black..white: the file's first window, else the image's own range."""
    center = _first_number(getattr(dataset, "WindowCenter", None))
    width = _first_number(getattr(dataset, "WindowWidth", None))
    if center is not None and width is not None and width >= 1:
        # DICOM's linear window: values at or below c - 0.5 - (w-1)/2 are black, at or above c - 0.5 + (w-1)/2 white.
        return center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    return float(finite.min()), float(finite.max())


def _first_number(value: object) -> float | None:
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):  # a multi-valued tag: take the first
        value = value[0] if len(value) else None
    if value is None:
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    scale = 255.0 / (high - low) if high > low else 0.0
    scaled = np.nan_to_num((values - low) * scale, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
