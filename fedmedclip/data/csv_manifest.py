"""The CSV manifest adapter: one row per image, ``path,label`` (and optionally a site column).

Relative paths are resolved against ``root`` (default: the CSV's own folder), so a manifest can travel with
its images. Rows may name images or DICOM files (a PACS export plus a label spreadsheet is a common layout).
A file listed twice with different labels is left out with both lines named. Like the ImageFolder adapter
it only lists files: missing files and other suffixes are reported in ``skipped`` and left out, and the
embedding pass reports files that do not decode. Defects of the manifest itself (missing columns, empty
labels or paths) are errors that name the row, because a silently shortened label list would bias every
number computed from it.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fedmedclip.data.dicom_folder import is_dicom_file
from fedmedclip.data.imagefolder import DatasetError, ImageRecord, LabeledImages
from fedmedclip.data.images import is_image_path

_MAX_REPORTED_ROWS = 5


@dataclass(frozen=True)
class _Row:
    line: int  # 1-based line in the file, header included: what a person sees in an editor
    path: Path
    label: str
    site: str


def read_csv_manifest(
    manifest: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    path_column: str = "path",
    label_column: str = "label",
    classes: Sequence[str] | None = None,
) -> LabeledImages:
    """The images listed in ``manifest`` as one site's ``LabeledImages``.

    ``classes=None`` takes the sorted distinct labels as the label space; a given list fixes the order, and
    rows whose label is not in it are skipped (reported), as the ImageFolder adapter ignores unnamed folders.
    """
    rows = _read_rows(Path(manifest), root, path_column, label_column, None)
    chosen = _class_list(rows, classes, Path(manifest))
    return _labeled(rows, chosen, Path(manifest))


def read_csv_sites(
    manifest: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    path_column: str = "path",
    label_column: str = "label",
    site_column: str = "site",
    classes: Sequence[str] | None = None,
) -> dict[str, LabeledImages]:
    """A multi-site manifest (``path,label,site``) as one ``LabeledImages`` per site, sorted by site name.

    All sites share one label space (the sorted union of labels, or ``classes``), so a class index means
    the same class everywhere.
    """
    path = Path(manifest)
    rows = _read_rows(path, root, path_column, label_column, site_column)
    chosen = _class_list(rows, classes, path)
    sites: dict[str, LabeledImages] = {}
    for site in sorted({row.site for row in rows}):
        members = [row for row in rows if row.site == site]
        sites[site] = _labeled(members, chosen, path, where=f"site {site!r} of ")
    return sites


def _read_rows(
    manifest: Path,
    root: str | os.PathLike[str] | None,
    path_column: str,
    label_column: str,
    site_column: str | None,
) -> list[_Row]:
    if not manifest.is_file():
        what = "is not a file" if manifest.exists() else "does not exist"
        raise DatasetError(f"CSV manifest {manifest} {what}")
    base = Path(root).expanduser() if root is not None else manifest.parent
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as handle:  # -sig: spreadsheets write a BOM
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            wanted = [path_column, label_column] + ([site_column] if site_column else [])
            missing = [name for name in wanted if name not in header]
            if missing:
                found = ", ".join(header) if header else "no header row"
                raise DatasetError(f"CSV manifest {manifest} lacks column(s) {', '.join(missing)} (found: {found})")
            reader.fieldnames = header
            raw = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"cannot read CSV manifest {manifest}: {error}") from error

    rows: list[_Row] = []
    problems: list[str] = []
    for index, record in enumerate(raw):
        line = index + 2
        values = {name: (record.get(name) or "").strip() for name in (path_column, label_column, site_column or "")}
        empty = [name for name in (path_column, label_column, site_column) if name and not values[name]]
        if empty:
            problems.append(f"line {line}: empty {', '.join(empty)}")
            continue
        file_path = Path(values[path_column]).expanduser()
        rows.append(
            _Row(
                line=line,
                path=file_path if file_path.is_absolute() else base / file_path,
                label=values[label_column],
                site=values[site_column] if site_column else "",
            )
        )
    if problems:
        shown = "; ".join(problems[:_MAX_REPORTED_ROWS])
        more = f" (and {len(problems) - _MAX_REPORTED_ROWS} more)" if len(problems) > _MAX_REPORTED_ROWS else ""
        raise DatasetError(f"CSV manifest {manifest} has {len(problems)} unusable row(s): {shown}{more}")
    if not rows:
        raise DatasetError(f"CSV manifest {manifest} lists no images")
    return rows


def _class_list(rows: Sequence[_Row], classes: Sequence[str] | None, manifest: Path) -> list[str]:
    if classes is None:
        return sorted({row.label for row in rows})
    chosen = [str(name) for name in classes]
    if not chosen:
        raise DatasetError(f"an empty class list was given for {manifest}")
    if len(set(chosen)) != len(chosen):
        raise DatasetError(f"class list for {manifest} repeats a class: {chosen}")
    return chosen


def _labeled(rows: Sequence[_Row], classes: list[str], manifest: Path, where: str = "") -> LabeledImages:
    index = {name: label for label, name in enumerate(classes)}
    records: list[ImageRecord] = []
    skipped: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    labels_of: dict[Path, list[_Row]] = defaultdict(list)
    for row in rows:
        labels_of[row.path].append(row)
    for row in rows:
        listings = labels_of[row.path]
        if len({other.label for other in listings}) > 1:
            # Which label is right is unknowable; training on either would be a silent guess.
            both = ", ".join(f"{other.label!r} on line {other.line}" for other in listings)
            skipped.append((row.path, f"line {row.line}: listed with different labels ({both})"))
        elif row.label not in index:
            skipped.append((row.path, f"line {row.line}: label {row.label!r} is not in the class list"))
        elif row.path in seen:
            skipped.append((row.path, f"line {row.line}: listed twice"))
        elif not row.path.is_file():
            skipped.append((row.path, f"line {row.line}: file not found"))
        elif not (is_image_path(row.path) or is_dicom_file(row.path)):
            # Same words as the other adapters; DICOM files were recognised by suffix or marker just above.
            skipped.append((row.path, f"line {row.line}: not an image suffix ({row.path.suffix or 'none'})"))
        else:
            seen.add(row.path)
            records.append(ImageRecord(path=row.path, class_name=row.label, label=index[row.label]))
    if not records:
        detail = f" ({len(skipped)} rows skipped, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DatasetError(f"no usable images in {where}CSV manifest {manifest}{detail}")
    return LabeledImages(classes=list(classes), records=records, skipped=skipped)
