"""Site data adapters: the ``data:`` settings → one ``LabeledImages`` (paths, labels, skipped files).

Registry: ``imagefolder`` (``root/<class>/<image>``), ``csv`` (a ``path,label`` manifest), ``isic2019`` (the
official ground-truth + metadata CSVs; this hospital is one ``anatom_site_general``, the paper's site split),
``dicom`` (``root/<class>/<file>.dcm``). Every adapter lists files without decoding them; undecodable files
are found and reported by the embedding pass. A site with no usable image is refused here, before it joins.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from fedmedclip.atomic_files import write_atomic
from fedmedclip.data.imagefolder import DatasetError, LabeledImages
from fedmedclip.logs import event
from hospital_agent.settings import ADAPTERS, DataSettings

log = logging.getLogger("hospital_agent.data")
MAX_LOGGED_SKIPS = 50  # the full list goes to <state_dir>/skipped.json; the log gets the first ones
SKIPPED_FILE = "skipped.json"

Adapter = Callable[[DataSettings], LabeledImages]


def _imagefolder(data: DataSettings) -> LabeledImages:
    from fedmedclip.data.imagefolder import scan_imagefolder

    return scan_imagefolder(data.root, data.classes)


def _csv(data: DataSettings) -> LabeledImages:
    from fedmedclip.data.csv_manifest import read_csv_manifest

    manifest = data.manifest if data.manifest is not None else data.root / "manifest.csv"
    return read_csv_manifest(
        manifest,
        root=data.root,
        path_column=data.path_column,
        label_column=data.label_column,
        classes=data.classes,
    )


def _isic2019(data: DataSettings) -> LabeledImages:
    from fedmedclip.data.isic2019 import DEFAULT_CLASSES, load_isic2019, site_name

    wanted = site_name(data.anatomical_site or "")
    # min 1: this hospital is one site; the paper's "drop tiny sites" rule is for building a federation.
    found = load_isic2019(data.root, classes=data.classes or DEFAULT_CLASSES, min_images_per_site=1)
    if wanted not in found.sites:
        known = ", ".join(sorted(found.sites)) or "none"
        raise DatasetError(
            f"ISIC 2019 data under {data.root} has no images for anatomical site {wanted!r} "
            f"(data.anatomical_site={data.anatomical_site!r}); sites with images: {known}"
        )
    site = found.sites[wanted]
    # Images with no metadata row belong to no anatomical site, so to no hospital: say so rather than drop them.
    unassigned = [(path, f"not assigned to any anatomical site: {reason}") for path, reason in found.unassigned]
    return LabeledImages(classes=site.classes, records=site.records, skipped=[*site.skipped, *unassigned])


def _dicom(data: DataSettings) -> LabeledImages:
    from fedmedclip.data.dicom_folder import scan_dicom_folder

    return scan_dicom_folder(data.root, data.classes)


REGISTRY: dict[str, Adapter] = {
    "imagefolder": _imagefolder,
    "csv": _csv,
    "isic2019": _isic2019,
    "dicom": _dicom,
}
assert set(REGISTRY) == set(ADAPTERS), "settings.ADAPTERS and the registry must name the same adapters"


def load_site_images(data: DataSettings) -> LabeledImages:
    """The site's labelled images; ``DatasetError`` (with paths) when the site has none it could use."""
    if not data.root.exists():
        raise DatasetError(f"data.root {data.root} does not exist (adapter {data.adapter})")
    images = REGISTRY[data.adapter](data)
    if len(images.classes) < 2:
        raise DatasetError(f"site data under {data.root} has {len(images.classes)} class(es); at least 2 are needed")
    if not images.records:  # adapters raise first; this keeps the promise if one ever returns empty
        raise DatasetError(f"no usable images under {data.root} (adapter {data.adapter})")
    return images


def report_skipped(
    skipped: Sequence[tuple[Path, str]], site: str, state_dir: Path | None = None, stage: str = "scan"
) -> None:
    """Log each skipped file with its path and reason (the first ``MAX_LOGGED_SKIPS``), keep the full list."""
    for path, reason in skipped[:MAX_LOGGED_SKIPS]:
        event(log, "file skipped", logging.WARNING, site=site, stage=stage, path=str(path), reason=reason)
    if len(skipped) > MAX_LOGGED_SKIPS:
        event(log, "more files skipped", logging.WARNING, site=site, stage=stage, count=len(skipped) - MAX_LOGGED_SKIPS)
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        listing = [{"path": str(path), "reason": reason} for path, reason in skipped]
        write_atomic(state_dir / f"{stage}-{SKIPPED_FILE}", json.dumps(listing, indent=1).encode())
