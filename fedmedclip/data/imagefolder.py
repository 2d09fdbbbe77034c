"""The ImageFolder adapter: ``root/<class>/<image>``, the layout the paper's datasets use.

Scanning only lists files; it never opens them, so a site with tens of thousands of images starts in well
under a second. Broken images are found later, by the embedding pass, which reports and skips them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedmedclip.data.images import IMAGE_SUFFIXES, is_image_path
from fedmedclip.data.layout import EMPTY_FOLDER_REASON, class_folders, files_under, skip_summary


class DatasetError(ValueError):
    """A dataset location or layout is unusable; the message names the path and what is wrong."""


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    class_name: str
    label: int  # index into LabeledImages.classes


@dataclass
class LabeledImages:
    """A site's labelled image list. ``skipped`` holds (path, reason) for every file that was left out."""

    classes: list[str]
    records: list[ImageRecord]
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [record.path for record in self.records]

    @property
    def labels(self) -> list[int]:
        return [record.label for record in self.records]

    def class_counts(self) -> dict[str, int]:
        """Images per class, in class order, zeros included (a site may lack some classes)."""
        counts = Counter(record.class_name for record in self.records)
        return {name: counts.get(name, 0) for name in self.classes}


def scan_imagefolder(root: str | os.PathLike[str], classes: Sequence[str] | None = None) -> LabeledImages:
    """List the images under ``root/<class>/``, labelled by class folder.

    ``classes=None`` takes every sub-folder holding at least one image, sorted, as the label space: a folder
    with no usable image, hidden folders and system folders (``__MACOSX``) are never classes, and each is
    reported in ``skipped``. Passing ``classes`` fixes the label order (so several sites can share one label
    space); each named folder must exist (it may be empty: a site may lack a class), and folders not named
    are ignored. Images in nested sub-folders of a class belong to that class. Files are sorted so that the
    same tree always gives the same records in the same order.
    """

    def keep(path: Path) -> str | None:
        return None if is_image_path(path) else f"not an image suffix ({path.suffix or 'none'})"

    return scan_class_folders(
        root,
        classes,
        keep,
        kind="image folder",
        files=f"images ({', '.join(sorted(IMAGE_SUFFIXES))})",
        pattern="<image>",
    )


def scan_class_folders(
    root: str | os.PathLike[str],
    classes: Sequence[str] | None,
    keep: Callable[[Path], str | None],
    *,
    kind: str,
    files: str,
    pattern: str,
) -> LabeledImages:
    """The ``root/<class>/`` walk shared by the image and DICOM folder adapters.

    ``keep`` returns ``None`` for a file to list, or the reason it is skipped; ``kind``, ``files`` and
    ``pattern`` only word the errors ("image folder root ... does not exist", "no images under ...").
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        what = "is not a directory" if base.exists() else "does not exist"
        raise DatasetError(f"{kind} root {base} {what}")
    skipped: list[tuple[Path, str]] = []
    present = class_folders(base, skipped)
    listed: dict[str, list[Path]] = {}
    for name in present if classes is None else [str(name) for name in classes if str(name) in present]:
        found = []
        for path in files_under(base / name, skipped):
            reason = keep(path)
            if reason is None:
                found.append(path)
            else:
                skipped.append((path, reason))
        if not found and classes is None:
            skipped.append((base / name, EMPTY_FOLDER_REASON))
            continue
        listed[name] = found
    if present and not any(listed.values()):
        raise DatasetError(f"no {files} under {base}{skip_summary(skipped)}")
    chosen = _choose_classes(
        base, [name for name in present if classes is not None or name in listed], classes, pattern
    )
    records = [
        ImageRecord(path=path, class_name=name, label=label)
        for label, name in enumerate(chosen)
        for path in listed.get(name, [])
    ]
    return LabeledImages(classes=chosen, records=records, skipped=skipped)


def _choose_classes(base: Path, present: list[str], classes: Sequence[str] | None, pattern: str) -> list[str]:
    if classes is None:
        if not present:
            raise DatasetError(f"no class folders in {base}: expected {base}/<class>/{pattern}")
        return present
    chosen = [str(name) for name in classes]
    if not chosen:
        raise DatasetError(f"an empty class list was given for {base}")
    duplicates = sorted(name for name, n in Counter(chosen).items() if n > 1)
    if duplicates:
        raise DatasetError(f"class list for {base} repeats {', '.join(duplicates)}")
    missing = [name for name in chosen if name not in present]
    if missing:
        found = ", ".join(present) if present else "none"
        raise DatasetError(f"class folder(s) missing in {base}: {', '.join(missing)} (found: {found})")
    return chosen
