"""Benchmark image sets in the formats a hospital stores: JPEG (at two source sizes), PNG and DICOM.

Each set is made from the same synthetic images, re-encoded, so the formats differ only in how they decode.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

# name → (suffix, source edge in pixels)
FORMATS: dict[str, tuple[str, int]] = {
    "jpeg224": (".jpg", 224),
    "jpeg1024": (".jpg", 1024),
    "png224": (".png", 224),
    "dicom512": (".dcm", 512),
}


def dicom_bytes(pixels: np.ndarray) -> bytes:
    """An uncompressed Part-10 DICOM (secondary capture): 8-bit RGB for H×W×3, 12-bit grey for H×W."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    if pixels.ndim == 3:
        ds.PhotometricInterpretation = "RGB"
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        data = pixels.astype(np.uint8)
    else:
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.SamplesPerPixel = 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        data = pixels.astype("<u2")
    ds.PixelRepresentation = 0
    ds.PixelData = data.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _convert(job: tuple[Path, Path, str, int]) -> Path:
    source, target, suffix, edge = job
    image = Image.open(source).convert("RGB")
    if image.size != (edge, edge):
        image = image.resize((edge, edge), Image.Resampling.BICUBIC)
    if suffix == ".dcm":
        grey = np.asarray(image.convert("L"), dtype=np.uint16) * 16  # 12-bit radiograph-like
        target.write_bytes(dicom_bytes(grey))
    elif suffix == ".jpg":
        image.save(target, format="JPEG", quality=90)
    else:
        image.save(target, format="PNG")
    return target


def format_sets(
    sources: Sequence[Path], out: Path, workers: int = 1, names: Sequence[str] = tuple(FORMATS)
) -> dict[str, list[Path]]:
    """``sources`` re-encoded in each format of ``names`` under ``out/<name>/``."""
    jobs: dict[str, list[tuple[Path, Path, str, int]]] = {}
    for name in names:
        suffix, edge = FORMATS[name]
        (out / name).mkdir(parents=True, exist_ok=True)
        jobs[name] = [(src, out / name / f"{i:05d}{suffix}", suffix, edge) for i, src in enumerate(sources)]
    flat = [job for name in names for job in jobs[name]]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_convert, flat, chunksize=16))
    else:
        for job in flat:
            _convert(job)
    return {name: [job[1] for job in jobs[name]] for name in names}
