"""``fedmedclip.data.check`` on its own: reason grouping, label normalisation, conflicts reported once."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from fedmedclip.data.check import check_site, normalise_label, reason_kind, render_text
from fedmedclip.data.imagefolder import scan_imagefolder


def test_reason_kind_drops_per_file_details() -> None:
    assert reason_kind("line 7: file not found") == "file not found"
    assert reason_kind("not an image suffix (.txt)") == "not an image suffix"
    assert reason_kind("OSError: image file is truncated (5 bytes not processed)") == "OSError: image file is truncated"
    assert reason_kind("transfer syntax JPEG-LS Lossless (1.2.840.10008.1.2.4.80) needs a decoder") == (
        "transfer syntax JPEG-LS Lossless"
    )


def test_labels_that_differ_only_in_spelling_normalise_alike() -> None:
    assert normalise_label("Nevus ") == normalise_label("nevus") == normalise_label("NE-VUS")
    assert normalise_label("basal_cell carcinoma") == normalise_label("Basal cell  carcinoma")
    assert normalise_label("nevus") != normalise_label("naevus")


def test_many_conflicting_copies_make_one_finding_naming_each_label(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
    for index in range(20):
        pixels = np.random.default_rng(index).integers(0, 255, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "a" / f"{index}.png")
        shutil.copy(tmp_path / "a" / f"{index}.png", tmp_path / "b" / f"{index}.png")  # the whole class, relabelled
    report = check_site(scan_imagefolder(tmp_path), site="s", adapter="imagefolder", root=tmp_path, workers=1)
    conflicts = [finding for finding in report.findings if finding.code == "label-conflict"]
    assert len(conflicts) == 1 and conflicts[0].message.startswith("20 image content(s)")
    assert "(a) = " in conflicts[0].message and "(b)" in conflicts[0].message
    assert render_text(report).splitlines()[-1].startswith("BLOCKED: 1 blocking problem(s)")


def test_dicom_and_images_do_not_import_each_other() -> None:
    """The decoders share an error module instead of a circle (images → dicom → images)."""
    source = (Path(__file__).parents[2] / "fedmedclip" / "data" / "dicom.py").read_text()
    assert "fedmedclip.data.images" not in source
