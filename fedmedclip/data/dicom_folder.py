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

    ``classes=None`` takes every non-hidden sub-folder, sorted; a given list fixes the label order and each
    named folder must exist. Files are sorted, so the same tree always gives the same records.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        what = "is not a directory" if base.exists() else "does not exist"
        raise DatasetError(f"DICOM folder root {base} {what}")
    present = sorted(entry.name for entry in os.scandir(base) if entry.is_dir() and not entry.name.startswith("."))
    chosen = _choose(base, present, classes)
    records: list[ImageRecord] = []
    skipped: list[tuple[Path, str]] = []
    for label, name in enumerate(chosen):
        for path in _files_under(base / name):
            if path.name.startswith("."):
                skipped.append((path, "hidden file"))
            elif is_dicom_file(path):
                records.append(ImageRecord(path=path, class_name=name, label=label))
            else:
                skipped.append((path, "not a DICOM file (no .dcm/.dicom suffix and no DICM marker)"))
    for entry in sorted(os.scandir(base), key=lambda e: e.name):
        if entry.is_file() and not entry.name.startswith("."):
            skipped.append((Path(entry.path), "not inside a class folder"))
    if not records:
        detail = f" ({len(skipped)} files skipped, e.g. {skipped[0][0].name}: {skipped[0][1]})" if skipped else ""
        raise DatasetError(f"no DICOM files under {base}/<class>/{detail}")
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


def _files_under(folder: Path) -> list[Path]:
    found: list[Path] = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if not name.startswith(".")]  # .git, .DS_Store folders and the like
        found.extend(Path(current) / name for name in files)
    return sorted(found, key=lambda path: path.relative_to(folder).parts)
