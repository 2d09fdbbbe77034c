"""Reduced-size JPEG decoding: a large photo is decoded at a fraction of its size, never below twice the
model input, and classifies like the full decode would within the resize's tolerance."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fedmedclip.data.images import decode_image
from inference_api.decoding import Upload, decode_upload


def _photo(side: int) -> bytes:
    rng = np.random.default_rng(3)
    ramp = np.linspace(30, 220, side)
    pixels = (ramp[None, :, None] + ramp[:, None, None] * 0.3 + rng.normal(0, 4, (side, side, 3))).clip(0, 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def test_large_jpeg_is_decoded_at_reduced_scale_but_not_below_twice_the_input():
    data = _photo(1600)
    reduced = decode_upload(Upload("big.jpg", data), max_pixels=40_000_000, draft_side=224)
    assert reduced.mode == "RGB"
    assert 448 <= min(reduced.size) < 1600  # 1/2 scale: 800 px; 1/4 would be 400 < 448
    full = decode_upload(Upload("big.jpg", data), max_pixels=40_000_000)
    assert full.size == (1600, 1600)
    # The model sees a 224 px resize of either: they agree closely.
    a = np.asarray(reduced.resize((224, 224), Image.Resampling.BICUBIC), dtype=np.float32)
    b = np.asarray(full.resize((224, 224), Image.Resampling.BICUBIC), dtype=np.float32)
    assert np.abs(a - b).mean() < 2.0


@pytest.mark.parametrize("side", [300, 64])
def test_small_jpeg_is_decoded_in_full(side):
    data = _photo(side)
    image = decode_upload(Upload("small.jpg", data), max_pixels=40_000_000, draft_side=224)
    assert image.size == (side, side)
    assert np.array_equal(np.asarray(image), np.asarray(decode_image(data)))
