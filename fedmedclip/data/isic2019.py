"""The ISIC 2019 adapter: the official training CSVs + image folder → one labelled site per anatomical site.

Files (as the challenge distributes them):
- ``ISIC_2019_Training_GroundTruth.csv``: ``image`` and one-hot columns MEL, NV, BCC, AK, BKL, DF, VASC, SCC,
  UNK (values ``1.0``/``0.0``);
- ``ISIC_2019_Training_Metadata.csv``: ``image``, ``anatom_site_general`` (plus age, sex, lesion id);
- ``ISIC_2019_Training_Input/<image>.jpg``.

The paper splits sites by ``anatom_site_general``. The reference implementation's domains are anterior
torso, head/neck, lower extremity, palms/soles, posterior torso and upper extremity as training sites and
the images without an anatomical site as the held-out site; oral/genital and lateral torso (about 60 images
each) are not used, which ``min_images_per_site`` reproduces. It used 6 classes; which 6 is not recorded, so
the default drops the two rarest (DF, VASC) and says so in the docs.
"""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from fedmedclip.data.imagefolder import DatasetError, ImageRecord, LabeledImages
from fedmedclip.data.images import IMAGE_SUFFIXES
from fedmedclip.data.layout import is_ignored_name

GROUND_TRUTH_FILE = "ISIC_2019_Training_GroundTruth.csv"
METADATA_FILE = "ISIC_2019_Training_Metadata.csv"
IMAGE_DIR = "ISIC_2019_Training_Input"
LABEL_CODES: tuple[str, ...] = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
# What CLIP reads in the prompt: the codes themselves mean nothing to a text encoder.
READABLE_NAMES: dict[str, str] = {
    "MEL": "melanoma",
    "NV": "melanocytic nevus",
    "BCC": "basal cell carcinoma",
    "AK": "actinic keratosis",
    "BKL": "benign keratosis",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
    "SCC": "squamous cell carcinoma",
    "UNK": "unknown lesion",
}
DEFAULT_CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AK", "BKL", "SCC")
UNKNOWN_SITE = "unknown"  # rows with an empty anatom_site_general (the reference's "Nan" domain)
DEFAULT_MIN_IMAGES_PER_SITE = 100
_SITE_COLUMN = "anatom_site_general"
_MAX_REPORTED = 5

BadRowPolicy = Literal["error", "skip"]


@dataclass
class ISIC2019Sites:
    """Kept sites (sorted by name) sharing one label space, and what was left out and why."""

    classes: list[str]  # class names as the prompts use them (readable names by default)
    codes: list[str]  # the ISIC label code of each class, same order
    sites: dict[str, LabeledImages]
    dropped_sites: dict[str, int] = field(default_factory=dict)  # site → images, below the minimum
    excluded_by_class: dict[str, int] = field(default_factory=dict)  # code → images outside the class subset
    unassigned: list[tuple[Path, str]] = field(default_factory=list)  # rows with no site (no metadata row)

    def site_counts(self) -> dict[str, int]:
        return {name: len(images.records) for name, images in self.sites.items()}


def site_name(anatomical_site: str) -> str:
    """``head/neck`` → ``head-neck``; empty → ``unknown``. Names become folder and table labels."""
    text = anatomical_site.strip().lower()
    if not text or text == "nan":
        return UNKNOWN_SITE
    return "-".join(text.replace("/", " ").split())


def load_isic2019(
    root: str | os.PathLike[str] | None = None,
    *,
    ground_truth: str | os.PathLike[str] | None = None,
    metadata: str | os.PathLike[str] | None = None,
    image_dir: str | os.PathLike[str] | None = None,
    classes: Sequence[str] = DEFAULT_CLASSES,
    min_images_per_site: int = DEFAULT_MIN_IMAGES_PER_SITE,
    readable_names: bool = True,
    bad_rows: BadRowPolicy = "error",
) -> ISIC2019Sites:
    """Read the official files and group the images of ``classes`` by anatomical site.

    Each file defaults to its official name under ``root``. A ground-truth row with no label or several
    labels is an error naming the rows (``bad_rows="skip"`` reports and skips them instead). Images listed
    but missing on disk are reported in their site's ``skipped`` and left out. Sites with fewer than
    ``min_images_per_site`` usable images are dropped and listed in ``dropped_sites``.
    """
    gt_path, meta_path, images_path = _locate(root, ground_truth, metadata, image_dir)
    codes = _check_classes(classes)
    if min_images_per_site < 1:
        raise DatasetError(f"min_images_per_site must be >= 1, got {min_images_per_site}")
    labels, bad = _read_ground_truth(gt_path)
    if bad and bad_rows == "error":
        raise DatasetError(f"{gt_path}: {len(bad)} row(s) do not have exactly one label: {_summarise(bad)}")
    anatomical = _read_metadata(meta_path)
    on_disk = _index_images(images_path)

    names = [READABLE_NAMES[code] if readable_names else code for code in codes]
    label_of = {code: index for index, code in enumerate(codes)}
    records: dict[str, list[ImageRecord]] = {}
    skipped: dict[str, list[tuple[Path, str]]] = {}
    unassigned: list[tuple[Path, str]] = [(images_path / f"{image}.jpg", reason) for image, reason in bad]
    excluded: Counter[str] = Counter()
    for image, code in labels.items():
        if code not in label_of:
            excluded[code] += 1
            continue
        path = on_disk.get(image)
        if image not in anatomical:
            unassigned.append((path or images_path / f"{image}.jpg", f"no row in {meta_path.name}"))
            continue
        site = site_name(anatomical[image])
        if path is None:
            # The official name, so the report says which file to restore.
            skipped.setdefault(site, []).append(
                (images_path / f"{image}.jpg", f"image file not found in {images_path}")
            )
            continue
        label = label_of[code]
        records.setdefault(site, []).append(ImageRecord(path=path, class_name=names[label], label=label))

    sites: dict[str, LabeledImages] = {}
    dropped: dict[str, int] = {}
    for site in sorted(set(records) | set(skipped)):
        members = records.get(site, [])
        if len(members) < min_images_per_site:
            dropped[site] = len(members)
            continue
        sites[site] = LabeledImages(classes=list(names), records=members, skipped=skipped.get(site, []))
    if not sites:
        counts = ", ".join(f"{name} {count}" for name, count in sorted(dropped.items())) or "none"
        raise DatasetError(
            f"no anatomical site has {min_images_per_site} usable images of classes {', '.join(codes)} "
            f"(images per site: {counts}); check image_dir {images_path} or lower min_images_per_site"
        )
    return ISIC2019Sites(
        classes=names,
        codes=codes,
        sites=sites,
        dropped_sites=dropped,
        excluded_by_class=dict(sorted(excluded.items())),
        unassigned=unassigned,
    )


def _locate(
    root: str | os.PathLike[str] | None,
    ground_truth: str | os.PathLike[str] | None,
    metadata: str | os.PathLike[str] | None,
    image_dir: str | os.PathLike[str] | None,
) -> tuple[Path, Path, Path]:
    base = Path(root).expanduser() if root is not None else None
    if base is None and None in (ground_truth, metadata, image_dir):
        raise DatasetError("give the ISIC 2019 root folder, or all of ground_truth, metadata and image_dir")

    def pick(given: str | os.PathLike[str] | None, default: str) -> Path:
        if given is not None:
            return Path(given).expanduser()
        assert base is not None
        return base / default

    gt_path, meta_path = pick(ground_truth, GROUND_TRUTH_FILE), pick(metadata, METADATA_FILE)
    if image_dir is not None:
        images_path = Path(image_dir).expanduser()
    else:
        assert base is not None
        # The official zip unpacks into ISIC_2019_Training_Input/; some mirrors put the images beside the CSVs.
        images_path = base / IMAGE_DIR if (base / IMAGE_DIR).is_dir() else base
    for what, path in (("ground-truth CSV", gt_path), ("metadata CSV", meta_path)):
        if not path.is_file():
            raise DatasetError(f"ISIC 2019 {what} {path} does not exist")
    if not images_path.is_dir():
        raise DatasetError(f"ISIC 2019 image folder {images_path} does not exist")
    return gt_path, meta_path, images_path


def _check_classes(classes: Sequence[str]) -> list[str]:
    codes = [str(code).strip().upper() for code in classes]
    unknown = [code for code in codes if code not in LABEL_CODES]
    if unknown:
        raise DatasetError(f"unknown ISIC 2019 class code(s) {', '.join(unknown)}; known: {', '.join(LABEL_CODES)}")
    if len(codes) < 2:
        raise DatasetError(f"need at least 2 classes, got {codes}")
    if len(set(codes)) != len(codes):
        raise DatasetError(f"class list repeats a class: {codes}")
    return codes


def _read_table(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in reader.fieldnames or []]
            missing = [name for name in required if name not in header]
            if missing:
                found = ", ".join(header) if header else "no header row"
                raise DatasetError(f"{path} lacks column(s) {', '.join(missing)} (found: {found})")
            reader.fieldnames = header
            return list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DatasetError(f"cannot read {path}: {error}") from error


def _read_ground_truth(path: Path) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """image → label code, and (image, reason) for rows without exactly one label."""
    rows = _read_table(path, ["image", *LABEL_CODES])
    labels: dict[str, str] = {}
    bad: list[tuple[str, str]] = []
    for index, row in enumerate(rows):
        line = index + 2  # the header is line 1
        image = (row.get("image") or "").strip()
        if not image:
            raise DatasetError(f"{path} line {line}: empty image id")
        if image in labels:
            raise DatasetError(f"{path} line {line}: image {image} is listed twice")
        hot = []
        for code in LABEL_CODES:
            value = _flag(row.get(code), path, line, code)
            if value:
                hot.append(code)
        if len(hot) == 1:
            labels[image] = hot[0]
        else:
            reason = "no label" if not hot else f"several labels ({', '.join(hot)})"
            bad.append((image, f"line {line}: {reason}"))
    if not labels and not bad:
        raise DatasetError(f"{path} has no rows")
    return labels, bad


def _flag(raw: str | None, path: Path, line: int, code: str) -> bool:
    text = (raw or "").strip()
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{path} line {line}: column {code} holds {text!r}, expected 0 or 1") from None
    if not math.isfinite(value) or value not in (0.0, 1.0):
        raise DatasetError(f"{path} line {line}: column {code} holds {text!r}, expected 0 or 1")
    return value == 1.0


def _read_metadata(path: Path) -> dict[str, str]:
    rows = _read_table(path, ["image", _SITE_COLUMN])
    return {(row.get("image") or "").strip(): (row.get(_SITE_COLUMN) or "") for row in rows if row.get("image")}


def _index_images(folder: Path) -> dict[str, Path]:
    """Image id (file stem) → path, listing the tree once rather than probing 25k names one by one.

    Sub-folders count (mirrors and unzip tools nest the images one level down); hidden and system folders
    such as ``__MACOSX`` do not. At equal suffix preference the shallowest path wins, so the result does not
    depend on the walk order.
    """
    found: dict[str, Path] = {}
    preference = {".jpg": 0, ".jpeg": 1, ".png": 2}
    for current_dir, dirs, files in os.walk(folder):
        dirs[:] = sorted(name for name in dirs if not is_ignored_name(name))
        for name in sorted(files):
            path = Path(current_dir) / name
            suffix = path.suffix.lower()
            if suffix not in IMAGE_SUFFIXES or is_ignored_name(name):
                continue
            current = found.get(path.stem)
            rank = (preference.get(suffix, 9), len(path.parts))
            if current is None or rank < (preference.get(current.suffix.lower(), 9), len(current.parts)):
                found[path.stem] = path
    return found


def _summarise(bad: Sequence[tuple[str, str]]) -> str:
    shown = "; ".join(f"{image} ({reason})" for image, reason in bad[:_MAX_REPORTED])
    return shown + (f" and {len(bad) - _MAX_REPORTED} more" if len(bad) > _MAX_REPORTED else "")
