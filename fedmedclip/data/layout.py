"""What a folder-per-class layout ignores: hidden entries and the metadata operating systems leave behind.

A macOS zip carries ``__MACOSX/`` (resource forks) and ``.DS_Store``; Windows leaves ``Thumbs.db`` and
``desktop.ini``; Jupyter leaves ``.ipynb_checkpoints/``. None of them is data, and a folder of them must never
become a class. Adapters report every ignored entry (path and reason) so nothing disappears silently.
"""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_NAMES: frozenset[str] = frozenset({"__macosx", "thumbs.db", "desktop.ini", "$recycle.bin", "lost+found"})
IGNORED_REASON = "hidden or system entry ignored"
EMPTY_FOLDER_REASON = "folder has no usable file, so it is not a class"


def is_ignored_name(name: str) -> bool:
    """Hidden (``.x``), AppleDouble (``._x``) or a known operating-system metadata name."""
    return name.startswith(".") or name.lower() in SYSTEM_NAMES


def files_under(folder: Path, ignored: list[tuple[Path, str]]) -> list[Path]:
    """Every file below ``folder``, sorted by relative parts; ignored folders and files go to ``ignored``."""
    found: list[Path] = []
    for current, dirs, files in os.walk(folder):
        for name in sorted(dirs):
            if is_ignored_name(name):
                ignored.append((Path(current) / name, IGNORED_REASON))
        dirs[:] = [name for name in dirs if not is_ignored_name(name)]
        for name in files:
            if is_ignored_name(name):
                ignored.append((Path(current) / name, IGNORED_REASON))
            else:
                found.append(Path(current) / name)
    return sorted(found, key=lambda path: path.relative_to(folder).parts)


def class_folders(base: Path, ignored: list[tuple[Path, str]]) -> list[str]:
    """Sorted sub-folder names of ``base`` that may be classes; ignored ones and loose files are reported."""
    present: list[str] = []
    for entry in sorted(os.scandir(base), key=lambda item: item.name):
        if is_ignored_name(entry.name):
            ignored.append((Path(entry.path), IGNORED_REASON))
        elif entry.is_dir():
            present.append(entry.name)
        else:
            # Loose files at the top level have no class; saying so beats ignoring a misplaced dataset.
            ignored.append((Path(entry.path), "not inside a class folder"))
    return present


def skip_summary(skipped: list[tuple[Path, str]]) -> str:
    """`` (N entries skipped, e.g. PATH: REASON)`` for an error message, or nothing."""
    if not skipped:
        return ""
    files = [item for item in skipped if item[1] != EMPTY_FOLDER_REASON]  # a file says more than its folder
    path, reason = (files or skipped)[0]
    return f" ({len(skipped)} entries skipped, e.g. {path.name}: {reason})"
