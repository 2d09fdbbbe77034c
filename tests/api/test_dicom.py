"""DICOM decoding (fedmedclip/data/dicom.py): windowing, monochrome handling, colour, and clear failures."""

from __future__ import annotations

import numpy as np
import pytest

from fedmedclip.data.dicom import decode_dicom, looks_like_dicom
from fedmedclip.data.images import ImageDecodeError
from tests.api.images import dicom_bytes, gradient, png_bytes


def _grey(data: bytes, **kwargs) -> np.ndarray:
    image = decode_dicom(data, "x.dcm", **kwargs)
    assert image.mode == "RGB"
    rgb = np.asarray(image)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[..., 0].astype(int)


def test_monochrome2_without_window_uses_the_full_range():
    grey = _grey(dicom_bytes())
    assert grey[0, 0] == 0 and grey[0, -1] == 255
    assert (np.diff(grey[0]) >= 0).all()  # a 12-bit ramp stays a ramp, not clipped at 255


def test_monochrome1_is_inverted_to_read_like_monochrome2():
    plain = _grey(dicom_bytes(photometric="MONOCHROME2"))
    inverted = _grey(dicom_bytes(photometric="MONOCHROME1"))
    assert (inverted == 255 - plain).all()


def test_rescale_then_window_like_a_ct_viewer():
    # Stored 0..4095 with intercept -1024 gives -1024..3071 HU; a soft-tissue window is centre 40, width 400.
    pixels = np.array([[1024 - 160 - 100, 1024 + 40, 1024 + 240 + 100]], dtype=np.uint16)
    grey = _grey(dicom_bytes(pixels, window=(40, 400), rescale=(1.0, -1024.0)))
    assert grey[0, 0] == 0 and grey[0, 2] == 255
    assert abs(grey[0, 1] - 128) <= 1


def test_rgb_dicom_keeps_its_colours():
    pixels = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[..., 0] = 250
    rgb = np.asarray(decode_dicom(dicom_bytes(pixels, photometric="RGB")))
    assert (rgb[..., 0] == 250).all() and (rgb[..., 1:] == 0).all()


def test_truncated_pixel_data_is_a_decode_error():
    data = dicom_bytes()
    with pytest.raises(ImageDecodeError, match="pixel data"):
        decode_dicom(data[: len(data) - 1000], "cut.dcm")


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the broken header too
@pytest.mark.parametrize("data", [b"", png_bytes(), b"\0" * 128 + b"DICM" + b"\xff" * 20])
def test_not_dicom_or_broken_header_is_a_decode_error(data):
    with pytest.raises(ImageDecodeError):
        decode_dicom(data, "bad.dcm")


def test_too_many_pixels_is_refused_before_decoding():
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_dicom(dicom_bytes(gradient(64, 64)), max_pixels=1000)


def test_sniffing():
    assert looks_like_dicom(dicom_bytes()) and not looks_like_dicom(png_bytes())
