from __future__ import annotations

import csv
from pathlib import Path

import pytest

from fedmedclip.data.imagefolder import DatasetError
from fedmedclip.data.isic2019 import (
    GROUND_TRUTH_FILE,
    IMAGE_DIR,
    LABEL_CODES,
    METADATA_FILE,
    load_isic2019,
    site_name,
)

from .conftest import write_isic_tree


def _rewrite(path: Path, edit) -> None:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = list(rows[0])
    rows, columns = edit(rows, columns)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def test_sites_are_anatomical_sites_with_the_class_subset_and_the_minimum(isic_root):
    loaded = load_isic2019(isic_root, min_images_per_site=5)
    assert list(loaded.sites) == ["anterior-torso", "head-neck", "unknown"]
    assert loaded.codes == ["MEL", "NV", "BCC", "AK", "BKL", "SCC"]
    assert loaded.classes[:2] == ["melanoma", "melanocytic nevus"]  # what CLIP reads in the prompt
    assert loaded.site_counts() == {"anterior-torso": 12, "head-neck": 12, "unknown": 8}
    assert loaded.dropped_sites == {"oral-genital": 3}
    assert loaded.excluded_by_class == {"DF": 2}
    torso = loaded.sites["anterior-torso"]
    assert torso.classes == loaded.classes  # one shared label space
    assert {r.class_name for r in torso.records} == {"melanoma", "melanocytic nevus"}
    assert all(r.path.is_file() and r.label == loaded.classes.index(r.class_name) for r in torso.records)


def test_codes_can_be_kept_and_any_subset_chosen(isic_root):
    loaded = load_isic2019(isic_root, classes=["nv", "DF"], min_images_per_site=2, readable_names=False)
    assert loaded.classes == ["NV", "DF"]
    assert loaded.site_counts()["anterior-torso"] == 8
    assert loaded.excluded_by_class == {"MEL": 15}


def test_images_missing_on_disk_are_reported_and_skipped(isic_root):
    missing = isic_root / IMAGE_DIR / "ISIC_0000000.jpg"
    missing.unlink()
    loaded = load_isic2019(isic_root, min_images_per_site=5)
    torso = loaded.sites["anterior-torso"]
    assert len(torso.records) == 11
    assert torso.skipped == [(missing, f"image file not found in {isic_root / IMAGE_DIR}")]


def test_files_can_be_named_one_by_one_and_images_may_sit_beside_the_csvs(tmp_path):
    root = tmp_path / "flat"
    write_isic_tree(root)
    for image in (root / IMAGE_DIR).iterdir():
        image.rename(root / image.name)
    (root / IMAGE_DIR).rmdir()
    assert load_isic2019(root, min_images_per_site=5).site_counts()["head-neck"] == 12
    named = load_isic2019(
        ground_truth=root / GROUND_TRUTH_FILE, metadata=root / METADATA_FILE, image_dir=root, min_images_per_site=5
    )
    assert named.site_counts() == {"anterior-torso": 12, "head-neck": 12, "unknown": 8}


@pytest.mark.parametrize("name", [GROUND_TRUTH_FILE, METADATA_FILE])
def test_a_missing_csv_is_a_clear_error(isic_root, name):
    (isic_root / name).unlink()
    with pytest.raises(DatasetError, match=f"{name} does not exist"):
        load_isic2019(isic_root)


def test_missing_root_or_image_folder(tmp_path):
    with pytest.raises(DatasetError, match="give the ISIC 2019 root"):
        load_isic2019(ground_truth=tmp_path / "gt.csv")
    root = tmp_path / "isic"
    write_isic_tree(root)
    with pytest.raises(DatasetError, match=r"image folder .*nowhere does not exist"):
        load_isic2019(root, image_dir=tmp_path / "nowhere")


def test_missing_columns_are_named(isic_root):
    _rewrite(isic_root / METADATA_FILE, lambda rows, cols: (rows, [c for c in cols if c != "anatom_site_general"]))
    with pytest.raises(DatasetError, match="lacks column\\(s\\) anatom_site_general"):
        load_isic2019(isic_root)
    _rewrite(isic_root / GROUND_TRUTH_FILE, lambda rows, cols: (rows, [c for c in cols if c != "VASC"]))
    with pytest.raises(DatasetError, match="lacks column\\(s\\) VASC"):
        load_isic2019(isic_root)


def _set_labels(image_index: int, codes: list[str]):
    def edit(rows, cols):
        rows[image_index].update({c: "1.0" if c in codes else "0.0" for c in LABEL_CODES})
        return rows, cols

    return edit


def test_rows_with_no_or_several_labels_are_errors_naming_them(isic_root):
    _rewrite(isic_root / GROUND_TRUTH_FILE, _set_labels(1, []))
    _rewrite(isic_root / GROUND_TRUTH_FILE, _set_labels(3, ["MEL", "BCC"]))
    with pytest.raises(DatasetError, match="2 row\\(s\\) do not have exactly one label") as caught:
        load_isic2019(isic_root)
    assert "ISIC_0000001 (line 3: no label)" in str(caught.value)
    assert "ISIC_0000003 (line 5: several labels (MEL, BCC))" in str(caught.value)
    loaded = load_isic2019(isic_root, bad_rows="skip", min_images_per_site=5)
    assert loaded.site_counts()["anterior-torso"] == 10
    assert [reason for _, reason in loaded.unassigned] == ["line 3: no label", "line 5: several labels (MEL, BCC)"]


def test_values_other_than_zero_or_one_and_duplicates_are_errors(isic_root):
    def bad_value(rows, cols):
        rows[0]["NV"] = "yes"
        return rows, cols

    _rewrite(isic_root / GROUND_TRUTH_FILE, bad_value)
    with pytest.raises(DatasetError, match="line 2: column NV holds 'yes'"):
        load_isic2019(isic_root)
    _rewrite(isic_root / GROUND_TRUTH_FILE, lambda rows, cols: ([*rows[1:], rows[1]], cols))
    with pytest.raises(DatasetError, match="ISIC_0000001 is listed twice"):
        load_isic2019(isic_root)


def test_images_without_metadata_are_unassigned(isic_root):
    _rewrite(isic_root / METADATA_FILE, lambda rows, cols: (rows[1:], cols))
    loaded = load_isic2019(isic_root, min_images_per_site=5)
    assert [(p.name, r) for p, r in loaded.unassigned] == [("ISIC_0000000.jpg", f"no row in {METADATA_FILE}")]


def test_class_and_site_arguments_are_checked(isic_root):
    with pytest.raises(DatasetError, match="unknown ISIC 2019 class code\\(s\\) XYZ"):
        load_isic2019(isic_root, classes=["MEL", "XYZ"])
    with pytest.raises(DatasetError, match="at least 2 classes"):
        load_isic2019(isic_root, classes=["MEL"])
    with pytest.raises(DatasetError, match="no anatomical site has 100 usable images"):
        load_isic2019(isic_root, min_images_per_site=100)


def test_site_names():
    assert site_name("head/neck") == "head-neck"
    assert site_name(" Lower Extremity ") == "lower-extremity"
    assert site_name("") == site_name("NaN") == "unknown"
