from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from fedmedclip.data.csv_manifest import read_csv_manifest, read_csv_sites
from fedmedclip.data.imagefolder import DatasetError


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (10, 20, 30)).save(path)
    return path


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    for name in ("a.png", "b.png", "c.jpg", "d.png"):
        _image(tmp_path / "img" / name)
    (tmp_path / "img" / "notes.txt").write_text("x")
    path = tmp_path / "labels.csv"
    path.write_text(
        "path,label,site\n"
        "img/a.png,benign,h1\n"
        "img/b.png,malignant,h1\n"
        f"{tmp_path / 'img' / 'c.jpg'},benign,h2\n"  # absolute paths stay as they are
        "img/missing.png,benign,h2\n"
        "img/notes.txt,benign,h2\n"
        "img/a.png,benign,h1\n"
        "img/d.png,odd,h2\n"
    )
    return path


def test_rows_become_labelled_records_resolved_against_the_csv_folder(manifest):
    images = read_csv_manifest(manifest)
    assert images.classes == ["benign", "malignant", "odd"]
    assert [(r.path.name, r.class_name, r.label) for r in images.records] == [
        ("a.png", "benign", 0),
        ("b.png", "malignant", 1),
        ("c.jpg", "benign", 0),
        ("d.png", "odd", 2),
    ]
    reasons = [reason for _, reason in images.skipped]
    assert reasons == ["line 5: file not found", "line 6: not an image suffix (.txt)", "line 7: listed twice"]


def test_a_class_list_fixes_the_order_and_skips_other_labels(manifest):
    images = read_csv_manifest(manifest, classes=["malignant", "benign"])
    assert [r.label for r in images.records] == [1, 0, 1]
    assert "line 8: label 'odd' is not in the class list" in [reason for _, reason in images.skipped]


def test_sites_share_one_label_space(manifest):
    sites = read_csv_sites(manifest)
    assert list(sites) == ["h1", "h2"]
    assert sites["h1"].classes == sites["h2"].classes == ["benign", "malignant", "odd"]
    assert [r.path.name for r in sites["h2"].records] == ["c.jpg", "d.png"]


def test_root_overrides_the_base_folder(tmp_path, manifest):
    other = tmp_path / "elsewhere"
    _image(other / "img" / "a.png")
    images = read_csv_manifest(manifest, root=other)
    assert [r.path for r in images.records if r.path.name == "a.png"] == [other / "img" / "a.png"]


def test_manifest_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_csv_manifest(tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\nx.png,a\n")
    with pytest.raises(DatasetError, match="lacks column\\(s\\) path, label \\(found: file, class\\)"):
        read_csv_manifest(bad)
    with pytest.raises(DatasetError, match="no usable images"):  # the columns can be renamed
        read_csv_manifest(bad, path_column="file", label_column="class")
    empty = tmp_path / "empty.csv"
    empty.write_text("path,label\n")
    with pytest.raises(DatasetError, match="lists no images"):
        read_csv_manifest(empty)
    blanks = tmp_path / "blanks.csv"
    blanks.write_text("path,label\na.png,\n,b\n")
    with pytest.raises(DatasetError, match="2 unusable row\\(s\\): line 2: empty label; line 3: empty path"):
        read_csv_manifest(blanks)
    with pytest.raises(DatasetError, match="lacks column\\(s\\) site"):
        read_csv_sites(blanks)


def test_no_usable_image_is_an_error(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("path,label\ngone.png,a\n")
    with pytest.raises(DatasetError, match=r"no usable images .*gone.png: line 2: file not found"):
        read_csv_manifest(path)
