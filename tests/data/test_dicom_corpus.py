"""pydicom's own test corpus (files written by dcmtk, GDCM and real scanners) through our decoder.

With the ``dicom-codecs`` extra (part of the ``test`` extra) every file with valid pixel data decodes; the few
that do not are listed here with the reason, so a new failure — or a fixed one — changes this test. Without
the plugins (simulated by hiding them from pydicom) each refusal names the transfer syntax and the package.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from fedmedclip.data.dicom_codecs import EXTRA_HINT, codec_status
from fedmedclip.data.images import ImageDecodeError, decode_image

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_files  # noqa: E402
from pydicom.pixels.decoders import base as decoder_base  # noqa: E402

# File → why it cannot decode. Four have no valid pixel data; two hold a damaged codestream.
EXPECTED_FAILURES: dict[str, str] = {
    "MR_truncated.dcm": "less than expected",  # pixel data cut short on purpose
    "badVR.dcm": "missing or invalid",  # Rows is '1A'
    "meta_missing_tsyntax.dcm": "missing or invalid",  # no transfer syntax, no image tags
    "nested_priv_SQ.dcm": "missing or invalid",  # pixel data only inside a private sequence
    "JPEG-lossy.dcm": "misplaced marker",  # a 12-bit JPEG whose scan header violates the standard
    "JPEG2000-embedded-sequence-delimiter.dcm": "J2K",  # the codestream header is damaged
}
COMPRESSED_NEEDING_PLUGIN = {
    "1.2.840.10008.1.2.4.51",
    "1.2.840.10008.1.2.4.57",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80",
    "1.2.840.10008.1.2.4.81",
    "1.2.840.10008.1.2.4.90",
    "1.2.840.10008.1.2.4.91",
}


def corpus_with_pixel_data() -> list[tuple[Path, str]]:
    """(file, transfer syntax UID) of every corpus file shipped in the wheel that carries pixel data."""
    found: list[tuple[Path, str]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the deliberately odd files; not our concern here
        files = get_testdata_files("*")  # offline: only what the wheel ships, never a download
        for name in sorted(files):
            try:
                dataset = pydicom.dcmread(name, force=True)
            except Exception:
                continue
            if "PixelData" in dataset:
                syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
                found.append((Path(name), str(syntax or "")))
    return found


def decode_all(files: list[tuple[Path, str]]) -> dict[str, str]:
    failures: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path, _ in files:
            try:
                image = decode_image(path.read_bytes(), path)
            except ImageDecodeError as error:
                failures[path.name] = error.reason
            else:
                assert image.mode == "RGB" and image.width > 0
    return failures


@pytest.fixture(scope="module")
def corpus() -> list[tuple[Path, str]]:
    files = corpus_with_pixel_data()
    if len(files) < 60:
        pytest.skip(f"this pydicom wheel ships {len(files)} files with pixel data; the test expects its 64")
    return files


def test_every_file_with_valid_pixel_data_decodes_with_the_codec_extra(corpus: list[tuple[Path, str]]) -> None:
    for uid in COMPRESSED_NEEDING_PLUGIN:
        assert codec_status(uid).decodable, f"{uid}: is the dicom-codecs extra installed?"
    failures = decode_all(corpus)
    assert set(failures) == set(EXPECTED_FAILURES), failures
    for name, reason in failures.items():
        assert EXPECTED_FAILURES[name] in reason, (name, reason)
        assert "\n" not in reason
    decoded = len(corpus) - len(failures)
    assert decoded >= 58, f"{decoded} of {len(corpus)} decoded"


def test_without_the_plugins_each_refusal_names_the_syntax_and_the_package(
    corpus: list[tuple[Path, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hide every third-party plugin from pydicom, as on a machine without the extra; pydicom's own RLE and
    # Pillow stay, which is what a plain install has.
    for uid in COMPRESSED_NEEDING_PLUGIN:
        decoder = decoder_base.get_decoder(pydicom.uid.UID(uid))
        kept = {name: plugin for name, plugin in decoder._available.items() if name in ("pydicom", "pillow")}
        monkeypatch.setattr(decoder, "_available", kept)
    failures = decode_all(corpus)
    refused = {path.name: (uid, failures[path.name]) for path, uid in corpus if path.name in failures}
    newly = {name for name in refused if name not in EXPECTED_FAILURES}
    assert len(newly) >= 8, failures  # JPEG-LS, JPEG Lossless, 12-bit JPEG, JPEG 2000: 50 of 64 decode then
    for name in newly:
        uid, reason = refused[name]
        assert uid in reason and EXTRA_HINT in reason, (name, reason)
        assert any(package in reason for package in ("pylibjpeg-libjpeg", "pyjpegls", "pylibjpeg-openjpeg"))
    syntaxes = {uid for uid, _ in refused.values()}
    assert {"1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80"} <= syntaxes  # Process 14 SV1 and JPEG-LS


def test_a_corrupt_rle_file_logs_one_line_naming_the_file(tmp_path: Path) -> None:
    """In a real process with our logging set up: no traceback on stderr, each pydicom message one line."""
    import io

    source = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small_RLE.dcm"))
    damaged = bytearray(source.PixelData)
    damaged[70:200] = b"\xff" * 130
    source.PixelData = bytes(damaged)
    buffer = io.BytesIO()
    source.save_as(buffer)
    path = tmp_path / "scan.dcm"
    path.write_bytes(buffer.getvalue())
    script = (
        "import sys; from pathlib import Path\n"
        "from fedmedclip.logs import configure_logging\n"
        "from fedmedclip.data.images import ImageDecodeError, load_image\n"
        "configure_logging('text', 'INFO')\n"
        "try:\n    load_image(Path(sys.argv[1]))\n"
        "except ImageDecodeError as error:\n    print('REFUSED', error.reason)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "REFUSED" in done.stdout and "RLE Lossless" in done.stdout
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if "pydicom" in line]
    assert lines, done.stderr
    assert all(str(path) in line for line in lines), lines
    assert not [line for line in done.stderr.splitlines() if line and str(path) not in line and "Warning" not in line]
