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
from fedmedclip.data.imagefolder import DatasetError, ImageRecord, LabeledImages
from fedmedclip.data.layout import EMPTY_FOLDER_REASON, class_folders, files_under, skip_summary

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
    base = Path(root).expanduser()
    if not base.is_dir():
        what = "is not a directory" if base.exists() else "does not exist"
        raise DatasetError(f"DICOM folder root {base} {what}")
    skipped: list[tuple[Path, str]] = []
    present = class_folders(base, skipped)
    listed: dict[str, list[Path]] = {}
    for name in present if classes is None else [str(name) for name in classes if str(name) in present]:
        found = []
        for path in files_under(base / name, skipped):
            if is_dicom_file(path):
                found.append(path)
            else:
                skipped.append((path, "not a DICOM file (no .dcm/.dicom suffix and no DICM marker)"))
        if not found and classes is None:
            skipped.append((base / name, EMPTY_FOLDER_REASON))
            continue
        listed[name] = found
    if present and not any(listed.values()):
        raise DatasetError(f"no DICOM files under {base}/<class>/{skip_summary(skipped)}")
    chosen = _choose(base, [name for name in present if classes is not None or name in listed], classes)
    records = [
        ImageRecord(path=path, class_name=name, label=label)
        for label, name in enumerate(chosen)
        for path in listed.get(name, [])
    ]
    return LabeledImages(classes=chosen, records=records, skipped=skipped)


def _choose(base: Path, present: list[str], classes: Sequence[str] | None) -> list[str]:
    if classes is None:
        if not present:
            raise DatasetError(f"no class folders in {base}: expected {base}/<class>/<file>.dcm")
        return present
    chosen = [str(name) for name in classes]
    if not chosen:
        raise DatasetError(f"an empty class list was given for {base}")
    if len(set(chosen)) != len(chosen):
        raise DatasetError(f"class list for {base} repeats a class: {chosen}")
    missing = [name for name in chosen if name not in present]
    if missing:
        raise DatasetError(
            f"class folder(s) missing in {base}: {', '.join(missing)} (found: {', '.join(present) or 'none'})"
        )
    return chosen
