"""Every data adapter on small files in the real formats, skipped-file reporting, and the zero-image refusal."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from fedmedclip.data.cache import EmbeddingCache, embed_images
from fedmedclip.data.dicom_folder import is_dicom_file, scan_dicom_folder
from fedmedclip.data.imagefolder import DatasetError
from fedmedclip.data.isic2019 import GROUND_TRUTH_FILE, IMAGE_DIR, LABEL_CODES, METADATA_FILE
from fedmedclip.model.backbone import Backbone
from hospital_agent.adapters import load_site_images, report_skipped
from hospital_agent.settings import DataSettings


def png(path: Path, colour: tuple[int, int, int] = (180, 90, 60), size: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def dicom_file(path: Path, high: int = 4095, monochrome1: bool = False) -> Path:
    """A Part-10 secondary-capture DICOM with a 12-bit ramp, as pydicom writes it."""
    pixels = np.tile(np.linspace(0, high, 32).round().astype("<u2"), (16, 1))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Modality = "OT"
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    dataset.SamplesPerPixel, dataset.PixelRepresentation = 1, 0
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 12, 11
    dataset.PixelData = pixels.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def data(adapter: str, root: Path, **extra: object) -> DataSettings:
    return DataSettings.model_validate({"adapter": adapter, "root": root, **extra})


def test_imagefolder_lists_images_and_reports_skipped_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for index in range(3):
        png(tmp_path / "benign" / f"b{index}.png")
        png(tmp_path / "malignant" / f"m{index}.png", (40, 40, 40))
    (tmp_path / "benign" / "notes.txt").write_text("not an image")
    images = load_site_images(data("imagefolder", tmp_path))
    assert images.classes == ["benign", "malignant"]
    assert len(images.records) == 6
    assert [(p.name, r) for p, r in images.skipped] == [("notes.txt", "not an image suffix (.txt)")]

    with caplog.at_level(logging.WARNING, logger="hospital_agent.data"):
        report_skipped(images.skipped, "site-x", tmp_path / "state")
    assert [getattr(record, "fields", {}).get("path") for record in caplog.records] == [
        str(tmp_path / "benign" / "notes.txt")
    ]
    saved = json.loads((tmp_path / "state" / "scan-skipped.json").read_text())
    assert saved == [{"path": str(tmp_path / "benign" / "notes.txt"), "reason": "not an image suffix (.txt)"}]


def test_csv_manifest_with_missing_files(tmp_path: Path) -> None:
    png(tmp_path / "img" / "a.png")
    png(tmp_path / "img" / "b.png")
    png(tmp_path / "img" / "c.png")
    with (tmp_path / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows([["img/a.png", "nevus"], ["img/b.png", "melanoma"], ["img/c.png", "nevus"]])
        writer.writerow(["img/gone.png", "melanoma"])
    images = load_site_images(data("csv", tmp_path))
    assert images.classes == ["melanoma", "nevus"]
    assert sorted(r.path.name for r in images.records) == ["a.png", "b.png", "c.png"]
    assert [(p.name, "file not found" in r) for p, r in images.skipped] == [("gone.png", True)]


def write_isic(root: Path) -> None:
    """A tiny ISIC 2019 tree: both official CSVs (one-hot ground truth, metadata with anatomical sites)."""
    rows = [
        ("ISIC_0000001", "MEL", "head/neck"),
        ("ISIC_0000002", "NV", "head/neck"),
        ("ISIC_0000003", "BCC", "head/neck"),
        ("ISIC_0000004", "NV", "lower extremity"),
        ("ISIC_0000005", "MEL", "lower extremity"),
        ("ISIC_0000006", "DF", "head/neck"),  # not in the default class subset
        ("ISIC_0000007", "NV", "head/neck"),  # listed, but its image is missing
        ("ISIC_0000008", "AK", ""),  # no anatomical site: the "unknown" site
    ]
    with (root / GROUND_TRUTH_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", *LABEL_CODES])
        for image, code, _ in rows:
            writer.writerow([image, *("1.0" if c == code else "0.0" for c in LABEL_CODES)])
    with (root / METADATA_FILE).open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "age_approx", "anatom_site_general", "lesion_id", "sex"])
        for image, _, site in rows:
            writer.writerow([image, "55.0", site, "", "female"])
    for image, _, _ in rows:
        if image != "ISIC_0000007":
            png(root / IMAGE_DIR / f"{image}.jpg")  # JPEG, like the challenge's files


def test_isic2019_picks_this_hospitals_anatomical_site(tmp_path: Path) -> None:
    write_isic(tmp_path)
    images = load_site_images(data("isic2019", tmp_path, anatomical_site="head/neck"))
    assert images.classes[:3] == ["melanoma", "melanocytic nevus", "basal cell carcinoma"]
    assert sorted(r.path.stem for r in images.records) == ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]
    assert [p.name for p, _ in images.skipped] == ["ISIC_0000007.jpg"]  # reported with its official name

    lower = load_site_images(data("isic2019", tmp_path, anatomical_site="lower extremity", classes=["MEL", "NV"]))
    assert lower.classes == ["melanoma", "melanocytic nevus"]
    assert sorted(r.label for r in lower.records) == [0, 1]

    with pytest.raises(DatasetError, match=r"no images for anatomical site 'palms-soles'.*head-neck"):
        load_site_images(data("isic2019", tmp_path, anatomical_site="palms/soles"))


def test_dicom_folder_with_suffixless_pacs_files(tmp_path: Path) -> None:
    dicom_file(tmp_path / "normal" / "a.dcm")
    dicom_file(tmp_path / "normal" / "series" / "1.2.840.1")  # suffix-less, as PACS exports name them
    dicom_file(tmp_path / "pneumonia" / "b.DCM", monochrome1=True)
    dicom_file(tmp_path / "pneumonia" / "c.dcm", high=1000)
    (tmp_path / "pneumonia" / "README").write_text("not dicom")
    png(tmp_path / "pneumonia" / "photo.png")
    assert is_dicom_file(tmp_path / "normal" / "series" / "1.2.840.1")
    assert not is_dicom_file(tmp_path / "pneumonia" / "README")

    images = load_site_images(data("dicom", tmp_path))
    assert images.classes == ["normal", "pneumonia"]
    assert sorted(r.path.name for r in images.records) == ["1.2.840.1", "a.dcm", "b.DCM", "c.dcm"]
    assert sorted(p.name for p, _ in images.skipped) == ["README", "photo.png"]
    with pytest.raises(DatasetError, match="class folder"):
        scan_dicom_folder(tmp_path, ["normal", "covid"])
    with pytest.raises(DatasetError, match="repeats normal"):
        scan_dicom_folder(tmp_path, ["normal", "normal"])
    assert scan_dicom_folder(tmp_path, ["pneumonia", "normal"]).classes == ["pneumonia", "normal"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"expected .*empty/<class>/<file>\.dcm"):
        scan_dicom_folder(tmp_path / "empty")
    with pytest.raises(DatasetError, match=r"DICOM folder root .* does not exist"):
        scan_dicom_folder(tmp_path / "nowhere")


def test_dicom_files_are_embedded_through_the_cache(tmp_path: Path, tiny_backbone: Backbone) -> None:
    paths = [dicom_file(tmp_path / "x" / f"{i}.dcm", high=500 + 1000 * i) for i in range(3)]
    with EmbeddingCache(tmp_path / "cache") as cache:
        result = embed_images(tiny_backbone, paths, cache)
    assert result.failed == []
    assert result.features.shape == (3, tiny_backbone.embed_dim)


def test_zero_usable_images_and_missing_root_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"data.root .*nowhere does not exist \(adapter imagefolder\)"):
        load_site_images(data("imagefolder", tmp_path / "nowhere"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "scan.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"no images .*\(3 entries skipped, e.g. scan.txt"):
        load_site_images(data("imagefolder", tmp_path))
    (tmp_path / "dcm").mkdir()
    with pytest.raises(DatasetError, match="no DICOM files"):
        load_site_images(data("dicom", tmp_path))


# --- the defects of issue 17: each test fails on the adapters as they were ---------------------------------


def test_empty_and_macos_folders_are_not_classes_and_are_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for index in range(2):
        png(tmp_path / "benign" / f"b{index}.png")
        png(tmp_path / "malignant" / f"m{index}.png", (40, 40, 40))
    (tmp_path / "empty_class").mkdir()
    png(tmp_path / "__MACOSX" / "benign" / "._b0.png")
    images = load_site_images(data("imagefolder", tmp_path))
    assert images.classes == ["benign", "malignant"]
    with caplog.at_level(logging.WARNING, logger="hospital_agent.data"):
        report_skipped(images.skipped, "site-x")
    logged = {
        getattr(record, "fields", {}).get("path"): getattr(record, "fields", {}).get("reason")
        for record in caplog.records
    }
    assert "not a class" in str(logged[str(tmp_path / "empty_class")])
    assert logged[str(tmp_path / "__MACOSX")] == "hidden or system entry ignored"

    dicom_file(tmp_path / "dcm" / "a" / "1.dcm")
    dicom_file(tmp_path / "dcm" / "b" / "2.dcm")
    (tmp_path / "dcm" / "empty").mkdir()
    (tmp_path / "dcm" / "__MACOSX").mkdir()
    scanned = load_site_images(data("dicom", tmp_path / "dcm"))
    assert scanned.classes == ["a", "b"]
    assert {p.name for p, _ in scanned.skipped} == {"empty", "__MACOSX"}


def test_csv_manifest_accepts_dicom_rows_and_refuses_conflicting_labels(tmp_path: Path) -> None:
    dicom_file(tmp_path / "pacs" / "1.dcm")
    dicom_file(tmp_path / "pacs" / "1.2.840.113619.2.55.3")  # UID-named export: found by its DICM marker
    png(tmp_path / "img" / "a.png")
    png(tmp_path / "img" / "b.png")
    with (tmp_path / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(
            [
                ["pacs/1.dcm", "normal"],
                ["pacs/1.2.840.113619.2.55.3", "pneumonia"],
                ["img/a.png", "normal"],
                ["img/b.png", "normal"],
                ["img/b.png", "pneumonia"],  # the same file, another label
            ]
        )
    images = load_site_images(data("csv", tmp_path))
    assert sorted(r.path.name for r in images.records) == ["1.2.840.113619.2.55.3", "1.dcm", "a.png"]
    conflicts = [reason for path, reason in images.skipped if path.name == "b.png"]
    assert len(conflicts) == 2
    assert all("different labels ('normal' on line 5, 'pneumonia' on line 6)" in reason for reason in conflicts)


def test_isic_images_without_metadata_are_reported_and_nested_images_are_found(tmp_path: Path) -> None:
    write_isic(tmp_path)
    # An image with a ground-truth row but no metadata row, and one image moved into a sub-folder.
    with (tmp_path / GROUND_TRUTH_FILE).open("a", newline="") as handle:
        csv.writer(handle).writerow(["ISIC_0000009", *("1.0" if c == "MEL" else "0.0" for c in LABEL_CODES)])
    png(tmp_path / IMAGE_DIR / "ISIC_0000009.jpg")
    nested = tmp_path / IMAGE_DIR / "batch-2"
    nested.mkdir()
    (tmp_path / IMAGE_DIR / "ISIC_0000003.jpg").rename(nested / "ISIC_0000003.jpg")
    images = load_site_images(data("isic2019", tmp_path, anatomical_site="head/neck"))
    assert sorted(r.path.stem for r in images.records) == ["ISIC_0000001", "ISIC_0000002", "ISIC_0000003"]
    reasons = {p.name: r for p, r in images.skipped}
    assert "not assigned to any anatomical site" in reasons["ISIC_0000009.jpg"]


def test_dicom_without_the_preamble_is_recognised_and_decoded(tmp_path: Path) -> None:
    from fedmedclip.data.images import load_image

    full = dicom_file(tmp_path / "with.dcm").read_bytes()
    bare = tmp_path / "b" / "1.2.840.1"
    bare.parent.mkdir()
    bare.write_bytes(full[132:])  # no 128-byte preamble, no "DICM": what some PACS tools write
    assert is_dicom_file(bare)
    assert load_image(bare).mode == "RGB"
