"""Which DICOM transfer syntaxes this installation can decode, and which package adds the missing ones.

pydicom decodes uncompressed, deflated and RLE pixel data itself (and baseline JPEG / some JPEG 2000 through
Pillow). Everything else a PACS commonly exports — JPEG Lossless Process 14, JPEG-LS, 12-bit JPEG Extended,
most JPEG 2000 — needs a decoder plugin, which the ``fedmedclip[dicom-codecs]`` extra installs
(pylibjpeg with its libjpeg, openjpeg and rle plugins, and pyjpegls). pydicom is asked, not guessed: a plugin
that is installed but broken counts as missing.
"""

from __future__ import annotations

from dataclasses import dataclass

EXTRA_HINT = "pip install 'fedmedclip[dicom-codecs]'"

# Transfer syntax UID → the plugin packages (any one is enough) that decode it. Syntaxes pydicom decodes on
# its own are absent.
_PACKAGES: dict[str, tuple[str, ...]] = {
    "1.2.840.10008.1.2.4.50": ("pylibjpeg-libjpeg", "pillow"),  # JPEG Baseline (8-bit)
    "1.2.840.10008.1.2.4.51": ("pylibjpeg-libjpeg",),  # JPEG Extended (12-bit)
    "1.2.840.10008.1.2.4.57": ("pylibjpeg-libjpeg",),  # JPEG Lossless, Process 14
    "1.2.840.10008.1.2.4.70": ("pylibjpeg-libjpeg",),  # JPEG Lossless, Process 14 SV1 (the common PACS one)
    "1.2.840.10008.1.2.4.80": ("pyjpegls", "pylibjpeg-libjpeg"),  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": ("pyjpegls", "pylibjpeg-libjpeg"),  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90": ("pylibjpeg-openjpeg",),  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": ("pylibjpeg-openjpeg",),  # JPEG 2000
    "1.2.840.10008.1.2.4.201": ("pylibjpeg-openjpeg",),  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": ("pylibjpeg-openjpeg",),  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": ("pylibjpeg-openjpeg",),  # HTJ2K
}

_EXTRA_PLUGINS = frozenset({"pylibjpeg", "pyjpegls", "gdcm"})  # pydicom's names of the third-party plugins


@dataclass(frozen=True)
class CodecStatus:
    uid: str
    name: str  # pydicom's name of the syntax, e.g. "JPEG-LS Lossless Image Compression"
    decodable: bool  # a decoder for it is installed and importable (maybe only Pillow, which reads a subset)
    packages: tuple[str, ...]  # plugins that decode it (empty: pydicom itself)
    plugins_missing: bool  # none of the extra's plugins for it is installed: only pydicom/Pillow would try

    @property
    def fix(self) -> str:
        """What to install, for a message: the extra, and which of its packages matter here."""
        if not self.packages:
            return ""
        return f"{EXTRA_HINT} (provides {' or '.join(self.packages)})"

    def describe(self) -> str:
        return f"{self.name} ({self.uid})"


def codec_status(uid: str) -> CodecStatus:
    """Whether pixel data in transfer syntax ``uid`` can be decoded here, and what would make it decodable."""
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import UID

    syntax = UID(uid)
    name = syntax.name if syntax.is_valid and syntax.name != uid else uid
    packages = _PACKAGES.get(str(syntax), ())
    try:
        decoder = get_decoder(syntax)
        decodable, available = bool(decoder.is_available), set(decoder.available_plugins)
    except NotImplementedError:  # pydicom has no decoder for this syntax at all (e.g. an unknown private one)
        decodable, available = False, set()
    return CodecStatus(
        uid=str(syntax),
        name=name,
        decodable=decodable,
        packages=packages,
        plugins_missing=bool(packages) and not available & _EXTRA_PLUGINS,
    )


def refusal(uid: str) -> str | None:
    """A one-line reason when ``uid`` cannot be decoded here, naming the syntax and the package; else None."""
    status = codec_status(uid)
    if status.decodable:
        return None
    if status.packages:
        return f"transfer syntax {status.describe()} needs a decoder that is not installed: {status.fix}"
    return f"transfer syntax {status.describe()} is not supported by pydicom"


def hint(uid: str) -> str:
    """For a decode that failed: what to install when only pydicom's built-in/Pillow decoders were tried."""
    status = codec_status(uid)
    return f"; {status.fix} may decode {status.describe()}" if status.plugins_missing else ""
