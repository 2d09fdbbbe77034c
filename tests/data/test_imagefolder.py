from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from fedmedclip.data.imagefolder import DatasetError, ImageRecord, scan_imagefolder


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (120, 80, 60)).save(path)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    for name in ("b2.png", "b1.PNG", "b3.jpeg"):
        _image(root / "benign" / name)
    _image(root / "malignant" / "m1.jpg")
    _image(root / "malignant" / "dermoscopy" / "m0.png")  # nested folders belong to their class
    (root / "malignant" / "notes.txt").write_text("reader notes")
    (root / "malignant" / ".DS_Store").write_bytes(b"\0")
    _image(root / "malignant" / ".ipynb_checkpoints" / "copy.png")  # hidden folder: never entered
    _image(root / ".trash" / "old.png")  # hidden folder: not a class
    _image(root / "stray.png")  # top-level file: no class
    return root


def test_classes_sorted_and_files_in_stable_order(tree: Path) -> None:
    found = scan_imagefolder(tree)

    assert found.classes == ["benign", "malignant"]
    assert [(r.path.relative_to(tree).as_posix(), r.class_name, r.label) for r in found.records] == [
        ("benign/b1.PNG", "benign", 0),
        ("benign/b2.png", "benign", 0),
        ("benign/b3.jpeg", "benign", 0),
        ("malignant/dermoscopy/m0.png", "malignant", 1),
        ("malignant/m1.jpg", "malignant", 1),
    ]
    assert found.labels == [0, 0, 0, 1, 1]
    assert found.class_counts() == {"benign": 3, "malignant": 2}


def test_skipped_files_are_reported_with_reasons(tree: Path) -> None:
    skipped = {path.relative_to(tree).as_posix(): reason for path, reason in scan_imagefolder(tree).skipped}
    assert skipped == {
        "malignant/notes.txt": "not an image suffix (.txt)",
        "malignant/.DS_Store": "hidden or system entry ignored",
        "malignant/.ipynb_checkpoints": "hidden or system entry ignored",
        ".trash": "hidden or system entry ignored",
        "stray.png": "not inside a class folder",
    }


def test_empty_and_system_folders_never_become_classes(tree: Path) -> None:
    (tree / "empty_class").mkdir()
    (tree / "only_notes").mkdir()
    (tree / "only_notes" / "readme.txt").write_text("no images here")
    _image(tree / "__MACOSX" / "benign" / "._b0.png")
    (tree / "Thumbs.db").write_bytes(b"x")
    found = scan_imagefolder(tree)
    assert found.classes == ["benign", "malignant"]
    skipped = {path.relative_to(tree).as_posix(): reason for path, reason in found.skipped}
    assert skipped["empty_class"] == "folder has no usable file, so it is not a class"
    assert skipped["only_notes"] == "folder has no usable file, so it is not a class"
    assert skipped["__MACOSX"] == "hidden or system entry ignored"
    assert skipped["Thumbs.db"] == "hidden or system entry ignored"


def test_an_explicitly_named_empty_class_stays_in_the_label_space(tree: Path) -> None:
    (tree / "rare").mkdir()
    found = scan_imagefolder(tree, classes=["benign", "malignant", "rare"])
    assert found.classes == ["benign", "malignant", "rare"]
    assert found.class_counts()["rare"] == 0


def test_explicit_classes_fix_label_order_and_ignore_other_folders(tree: Path) -> None:
    _image(tree / "unlabelled" / "u.png")
    found = scan_imagefolder(tree, classes=["malignant", "benign"])
    assert found.classes == ["malignant", "benign"]
    assert {r.class_name: r.label for r in found.records} == {"malignant": 0, "benign": 1}
    assert all(r.class_name != "unlabelled" for r in found.records)


def test_explicit_class_without_folder_is_named(tree: Path) -> None:
    with pytest.raises(DatasetError, match=r"missing .*: vascular, keratosis"):
        scan_imagefolder(tree, classes=["benign", "vascular", "keratosis"])


def test_explicit_classes_must_not_repeat(tree: Path) -> None:
    with pytest.raises(DatasetError, match="repeats benign"):
        scan_imagefolder(tree, classes=["benign", "malignant", "benign"])


def test_missing_root_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist") as caught:
        scan_imagefolder(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_root_without_class_folders_is_an_error(tmp_path: Path) -> None:
    _image(tmp_path / "flat" / "a.png")
    with pytest.raises(DatasetError, match="no class folders") as caught:
        scan_imagefolder(tmp_path / "flat")
    assert str(tmp_path / "flat") in str(caught.value)


def test_class_folders_without_any_image_are_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "benign").mkdir(parents=True)
    (tmp_path / "empty" / "benign" / "readme.md").write_text("x")
    with pytest.raises(DatasetError, match="no images"):
        scan_imagefolder(tmp_path / "empty")


def test_scanning_does_not_open_images(tmp_path: Path) -> None:
    # A corrupt file with an image suffix is listed: decoding (and reporting it) is the embedding pass's job.
    (tmp_path / "benign").mkdir()
    (tmp_path / "benign" / "corrupt.png").write_bytes(b"not really a png")
    found = scan_imagefolder(tmp_path)
    assert found.records == [ImageRecord(tmp_path / "benign" / "corrupt.png", "benign", 0)]
