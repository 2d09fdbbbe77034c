"""What one upload may cost: the default pixel limit follows the model's input, large DICOMs are reduced
before windowing (peak memory measured with tracemalloc, which sees numpy's buffers), and whatever
preprocessing raises is a 422 naming the file."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from fedmedclip.data.dicom import decode_dicom
from inference_api.decoding import Limits, Upload, default_max_pixels, prepare_batch, prepare_one
from inference_api.errors import BadImageError
from inference_api.service import upload_limits
from tests.api.conftest import make_settings
from tests.api.images import dicom_bytes, png_bytes


def _peak_mib(work: Callable[[], Image.Image]) -> tuple[Image.Image, float]:
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_a_large_dicom_is_reduced_before_its_float_copies():
    rows = cols = 2048
    data = dicom_bytes((np.indices((rows, cols)).sum(axis=0) % 4096).astype(np.uint16), window=(2048, 4096))
    full, full_peak = _peak_mib(lambda: decode_dicom(data, "big.dcm"))
    reduced, reduced_peak = _peak_mib(lambda: decode_dicom(data, "big.dcm", min_side=448))
    assert full.size == (2048, 2048) and reduced.size == (512, 512)  # k = 4 keeps the short side ≥ 448
    # Full: several float64 copies of 4 Mpx (32 MiB each). Reduced: the stored uint16 frame and small copies.
    assert full_peak > 64 and reduced_peak < full_peak / 4, (full_peak, reduced_peak)
    # The reduction is an average, so the picture is the same at the model's scale.
    a = np.asarray(full.resize((224, 224), Image.Resampling.BICUBIC), dtype=np.float32)
    b = np.asarray(reduced.resize((224, 224), Image.Resampling.BICUBIC), dtype=np.float32)
    assert np.abs(a - b).mean() < 3.0


def test_a_small_dicom_is_not_reduced():
    data = dicom_bytes()  # 32 x 64
    assert np.array_equal(np.asarray(decode_dicom(data, min_side=448)), np.asarray(decode_dicom(data)))


def test_the_default_pixel_limit_follows_the_models_input(tmp_path, tiny_spec):
    settings = make_settings(tmp_path, tiny_spec)
    assert settings.max_image_pixels is None
    assert upload_limits(settings, 224).max_pixels == default_max_pixels(224) == 256 * 224 * 224  # 12.8 MP
    assert upload_limits(settings, 64).max_pixels == 256 * 64 * 64
    assert upload_limits(make_settings(tmp_path, tiny_spec, max_image_pixels=1000), 224).max_pixels == 1000


def test_over_the_derived_limit_is_refused_from_the_header():
    limits = Limits(max_pixels=default_max_pixels(64), input_side=64)
    with pytest.raises(BadImageError, match="over the limit"):
        prepare_one(Upload("big.png", png_bytes((1100, 1000))), lambda image: torch.zeros(3, 64, 64), limits)


@pytest.mark.parametrize("error", [MemoryError(), OverflowError("size does not fit in an int"), RuntimeError("x")])
def test_whatever_preprocessing_raises_is_a_422_naming_the_file(error):
    def preprocess(image: Image.Image) -> torch.Tensor:
        raise error

    with pytest.raises(BadImageError, match=r"'scan\.png' cannot be processed") as raised:
        prepare_batch([Upload("scan.png", png_bytes())], preprocess, Limits(max_pixels=10**6, input_side=64))
    assert raised.value.status == 422


def test_a_preprocess_that_changes_shape_is_a_422_not_a_stack_error():
    shapes = iter([(3, 64, 64), (3, 64, 80)])
    with pytest.raises(BadImageError, match="unexpected shape"):
        prepare_batch(
            [Upload("a.png", png_bytes()), Upload("b.png", png_bytes())],
            lambda image: torch.zeros(next(shapes)),
            Limits(max_pixels=10**6, input_side=64),
        )
