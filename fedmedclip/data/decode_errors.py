"""The one error every image decoder raises (PNG/JPEG through Pillow, DICOM through pydicom).

It lives apart from both decoders so that ``images`` can hand DICOM to ``dicom`` and ``dicom`` can raise the
same error without the two modules importing each other.
"""

from __future__ import annotations

import os
from pathlib import Path


class ImageDecodeError(ValueError):
    """A file could not be decoded as an image. ``path`` and ``reason`` are meant for reports."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot decode image {self.path}: {reason}")
