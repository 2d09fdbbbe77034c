"""The ImageFolder adapter: ``root/<class>/<image>``, the layout the paper's datasets use.

Scanning only lists files; it never opens them, so a site with tens of thousands of images starts in well
under a second. Broken images are found later, by the embedding pass, which reports and skips them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedmedclip.data.images import IMAGE_SUFFIXES, is_image_path


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

    ``classes=None`` takes every non-hidden sub-folder, sorted, as the label space. Passing ``classes`` fixes
    the label order (so several sites can share one label space); each named folder must exist, and folders
    not named are ignored. Images in nested sub-folders of a class belong to that class. Files are sorted so
    that the same tree always gives the same records in the same order.
    """
    base = Path(root).expanduser()
    if not base.is_dir():
        what = "is not a directory" if base.exists() else "does not exist"
        raise DatasetError(f"image folder root {base} {what}")
    present = sorted(entry.name for entry in os.scandir(base) if entry.is_dir() and not _hidden(entry.name))
    chosen = _choose_classes(base, present, classes)

    records: list[ImageRecord] = []
    skipped: list[tuple[Path, str]] = []
    for label, name in enumerate(chosen):
        for path in _files_under(base / name):
            reason = _skip_reason(path, base / name)
            if reason:
                skipped.append((path, reason))
            else:
                records.append(ImageRecord(path=path, class_name=name, label=label))
    # Loose files at the top level have no class; saying so beats silently ignoring a misplaced dataset.
    for entry in sorted(os.scandir(base), key=lambda e: e.name):
        if entry.is_file() and not _hidden(entry.name):
            skipped.append((Path(entry.path), "not inside a class folder"))
    if not records:
        detail = f" ({len(skipped)} files skipped, e.g. {skipped[0][0].name}: {skipped[0][1]})" if skipped else ""
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {base}{detail}")
    return LabeledImages(classes=chosen, records=records, skipped=skipped)


def _choose_classes(base: Path, present: list[str], classes: Sequence[str] | None) -> list[str]:
    if classes is None:
        if not present:
            raise DatasetError(f"no class folders in {base}: expected {base}/<class>/<image>")
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


def _files_under(folder: Path) -> list[Path]:
    """Every file below ``folder``; hidden folders are not entered (``.ipynb_checkpoints``, ``.git``...)."""
    found: list[Path] = []
    for current, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if not _hidden(name)]
        found.extend(Path(current) / name for name in files)
    return sorted(found, key=lambda path: path.relative_to(folder).parts)


def _skip_reason(path: Path, class_dir: Path) -> str:
    if any(_hidden(part) for part in path.relative_to(class_dir).parts):
        return "hidden file"
    if not is_image_path(path):
        return f"not an image suffix ({path.suffix or 'none'})"
    return ""


def _hidden(name: str) -> bool:
    return name.startswith(".")
