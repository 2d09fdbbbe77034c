"""The DICOM adapter: labelled DICOM files in class sub-folders, ``root/<class>/**/<file>``.

The layout is the ImageFolder one, because that is what a PACS export sorted by diagnosis looks like and what
hospital IT can produce with a file manager. A file counts as DICOM when its suffix is ``.dcm`` / ``.dicom``
(any case), or else when it carries the Part-10 ``DICM`` marker: PACS exports often name files by their UID
(``1.2.840.113619.2.55.3``), whose last dotted part looks like a suffix, so only the marker can tell. Those
files are opened and their first 132 bytes read; nothing is decoded. Everything else is reported in
``skipped`` with its path and left out. Like the other adapters, scanning does not decode: the
embedding pass decodes through ``fedmedclip.data.dicom`` (windowing, MONOCHROME1) and reports files that fail.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from fedmedclip.data.dicom import looks_like_dicom
from fedmedclip.data.imagefolder import LabeledImages, scan_class_folders

DICOM_SUFFIXES: frozenset[str] = frozenset({".dcm", ".dicom"})
_MARKER_BYTES = 132  # 128-byte preamble + "DICM"


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """DICOM by suffix, else by the Part-10 marker."""
    file = Path(path)
    if file.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with file.open("rb") as handle:
            return looks_like_dicom(handle.read(_MARKER_BYTES))
    except OSError:
        return False


def scan_dicom_folder(root: str | os.PathLike[str], classes: Sequence[str] | None = None) -> LabeledImages:
    """List the DICOM files under ``root/<class>/``, labelled by class folder.

    ``classes=None`` takes every sub-folder holding at least one DICOM file, sorted; empty, hidden and system
    folders (``__MACOSX``) are never classes and are reported in ``skipped``. A given list fixes the label
    order and each named folder must exist. Files are sorted, so the same tree always gives the same records.
    """

    def keep(path: Path) -> str | None:
        return None if is_dicom_file(path) else "not a DICOM file (no .dcm/.dicom suffix and no DICM marker)"

    return scan_class_folders(root, classes, keep, kind="DICOM folder", files="DICOM files", pattern="<file>.dcm")
