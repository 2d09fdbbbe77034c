from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedmedclip.data.images import IMAGE_SUFFIXES, ImageDecodeError, decode_image, is_image_path, load_image


def _save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


def test_sixteen_bit_grey_is_stretched_not_clipped_to_white(tmp_path: Path) -> None:
    # A 12-bit radiograph in a 16-bit PNG: Pillow's plain convert("RGB") would turn all of it white.
    values = np.linspace(1000, 4000, 32 * 32).reshape(32, 32).astype(np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "xray.png")
    assert Image.open(path).mode.startswith("I")

    image = load_image(path)

    pixels = np.asarray(image)
    assert image.mode == "RGB"
    assert pixels.min() == 0 and pixels.max() == 255
    assert np.array_equal(pixels[..., 0], pixels[..., 2])  # still grey
    assert pixels[0, 0, 0] < pixels[16, 16, 0] < pixels[-1, -1, 0]  # order of intensities kept


def test_transparent_pixels_do_not_leak_hidden_colour(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere underneath...
    rgba[:4, :, 3] = 255  # ...but only the top half is opaque
    image = load_image(_save(Image.fromarray(rgba), tmp_path / "mask.png"))
    pixels = np.asarray(image)
    assert tuple(pixels[0, 0]) == (255, 0, 0)
    assert tuple(pixels[-1, -1]) == (0, 0, 0)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1"])
def test_other_modes_become_rgb(tmp_path: Path, mode: str) -> None:
    suffix = ".jpg" if mode == "CMYK" else ".png"
    image = load_image(_save(Image.new("RGB", (10, 6), (200, 100, 50)).convert(mode), tmp_path / f"x{suffix}"))
    assert image.mode == "RGB" and image.size == (10, 6)


def test_truncated_file_raises_decode_error_with_path(tmp_path: Path) -> None:
    whole = _save(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), tmp_path / "a.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(whole.read_bytes()[:200])

    with pytest.raises(ImageDecodeError) as caught:
        load_image(broken)
    assert caught.value.path == broken
    assert str(broken) in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"hello, not an image", "not a recognised image format")],
)
def test_non_images_raise_decode_error(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError) as caught:
        load_image(path)
    assert caught.value.reason == reason


def test_missing_file_raises_decode_error(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match=r"gone\.png"):
        load_image(tmp_path / "gone.png")


def test_suffixes_are_case_insensitive() -> None:
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"} == IMAGE_SUFFIXES
    assert is_image_path("scan.JPG") and is_image_path("a/b/c.TiFf")
    assert not is_image_path("notes.txt") and not is_image_path("png")


def _dicom_bytes(tmp_path: Path) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    scan = Dataset()
    scan.file_meta = meta
    scan.SOPClassUID, scan.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    scan.Rows, scan.Columns, scan.SamplesPerPixel = 8, 8, 1
    scan.PhotometricInterpretation, scan.BitsAllocated, scan.BitsStored, scan.HighBit = "MONOCHROME2", 16, 12, 11
    scan.PixelRepresentation = 0
    scan.PixelData = (np.arange(64, dtype=np.uint16) * 60).tobytes()
    scan.save_as(tmp_path / "scan.dcm", enforce_file_format=True)
    return (tmp_path / "scan.dcm").read_bytes()


def test_dicom_bytes_are_decoded_not_refused(tmp_path: Path) -> None:
    # The embedding pass decodes everything through decode_image, so DICOM sites need it to dispatch.
    image = decode_image(_dicom_bytes(tmp_path), "scan.dcm")
    pixels = np.asarray(image)
    assert image.mode == "RGB" and image.size == (8, 8)
    assert pixels[0, 0, 0] < pixels[-1, -1, 0]


def test_broken_dicom_raises_decode_error(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(_dicom_bytes(tmp_path)[:300], "cut.dcm")
