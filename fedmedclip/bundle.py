"""The personalised bundle: what the agent publishes after each round and the inference API serves (docs/design.md §7).

Layout, one folder per site and one immutable folder per version::

    <bundle_root>/<site>/<version>/manifest.json         site, classes, prompts, backbone, digests, metrics
    <bundle_root>/<site>/<version>/fam.safetensors       the global FAM this version was built from
    <bundle_root>/<site>/<version>/head.safetensors      the site's private head (absent for an unseen site)
    <bundle_root>/<site>/<version>/prototypes.safetensors  the class text prototypes T (C × D)
    <bundle_root>/<site>/current                         a pointer file: one line, the served version's name

The agent calls :func:`write_bundle` after each round; the API calls :func:`read_current` (or
:func:`read_bundle`) and :func:`check_compatible`. Every tensor file's sha256 is in the manifest and is
checked on every read, on the very bytes that are then parsed.

Why a pointer *file* for ``current`` rather than a symlink: it is replaced with ``os.replace`` (atomic on
POSIX and Windows), survives copies, archives and volume mounts that drop or re-root symlinks (the compose
demo mounts bundle folders read-only into another container), and a reader needs no path resolution that
could step outside the site folder. A version folder is complete and verified before the pointer names it,
because it is assembled in a hidden temporary folder and renamed into place.

Weights are safetensors only, never pickle.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from fedmedclip.atomic_files import fsync_dir, write_atomic
from fedmedclip.model.backbone import Backbone, BackboneSpec
from fedmedclip.model.fam import FAM_TENSOR_NAMES, fam_shapes
from fedmedclip.model.head import DEFAULT_HIDDEN, build_head
from fedmedclip.model.personalised import PersonalisedClassifier
from fedmedclip.model.prompts import render_prompts
from fedmedclip.privacy.ledger import PrivacyGuarantee
from fedmedclip.training.calibration import Calibration

FORMAT = "fedmedclip-bundle"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
FAM_FILE = "fam.safetensors"
HEAD_FILE = "head.safetensors"
PROTOTYPES_FILE = "prototypes.safetensors"
CURRENT_POINTER = "current"
_PROTOTYPES_KEY = "prototypes"
_MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # a manifest with thousands of classes is still far below this
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # safe as a path component and in a URL


class BundleError(Exception):
    """A bundle is missing, malformed, fails a digest, or does not fit the loaded backbone."""

    def __init__(self, where: str | os.PathLike[str], reason: str) -> None:
        self.where = str(where)
        self.reason = reason
        super().__init__(f"bundle {self.where}: {reason}")


@dataclass(frozen=True)
class BackboneRecord:
    """What a bundle records about the frozen CLIP it was built with; enough to refuse a mismatch."""

    spec: BackboneSpec
    weights_digest: str
    embed_dim: int
    logit_scale: float

    @classmethod
    def of(cls, backbone: Backbone) -> BackboneRecord:
        return cls(backbone.spec, backbone.weights_digest, backbone.embed_dim, backbone.logit_scale)


@dataclass(frozen=True)
class Bundle:
    """One verified bundle version, in memory. Tensors are float32 on the CPU."""

    site: str
    version: str
    created: datetime
    classes: tuple[str, ...]
    prompts: tuple[str, ...]
    backbone: BackboneRecord
    fam_version: int
    fam_state: dict[str, torch.Tensor]
    text_prototypes: torch.Tensor
    head_state: dict[str, torch.Tensor] | None
    head_hidden: int
    metrics: dict[str, float] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)  # file name → sha256, as in the manifest
    path: Path | None = None
    # Differential privacy of the FAM and the head for this site's records (docs/design.md §7, §6.5);
    # None: no formal guarantee (DP off, or a bundle written before the ledger existed).
    fam_privacy: PrivacyGuarantee | None = None
    head_privacy: PrivacyGuarantee | None = None
    calibration: Calibration | None = None  # None: an older bundle, or too little validation data to fit

    @property
    def has_head(self) -> bool:
        return self.head_state is not None

    @property
    def temperature(self) -> float:
        return self.calibration.temperature if self.calibration is not None else 1.0

    def classifier(self, device: torch.device | str = "cpu") -> PersonalisedClassifier:
        """The site's ensemble classifier ready for ``predict(raw CLIP embeddings)``."""
        return PersonalisedClassifier(
            self.classes,
            self.fam_state,
            self.text_prototypes,
            self.backbone.logit_scale,
            self.head_state,
            head_hidden=self.head_hidden,
            temperature=self.temperature,
        ).to(device)


# --- the manifest schema (pydantic gives precise messages for hand-edited or truncated files) -------------


class _BackboneModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    model: str
    weights: str | None
    preprocess: str
    seed: int
    weights_digest: str
    embed_dim: int
    logit_scale: float


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    sha256: str


class _PrivacyModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    epsilon: float
    delta: float
    unit: str = "record"


class _FamModel(_FileModel):
    version: int
    privacy: _PrivacyModel | None = None  # absent in bundles written before the privacy ledger


class _HeadModel(_FileModel):
    hidden: int
    privacy: _PrivacyModel | None = None


class _CalibrationModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    method: str
    temperature: float
    samples: int
    split: str
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float


class _ManifestModel(BaseModel):
    # Unknown keys are ignored so that a newer writer with the same FORMAT_VERSION stays readable.
    model_config = ConfigDict(extra="ignore", frozen=True)
    format: str
    format_version: int
    site: str
    version: str
    created: datetime
    classes: list[str]
    prompts: list[str]
    backbone: _BackboneModel
    fam: _FamModel
    head: _HeadModel | None
    prototypes: _FileModel
    metrics: dict[str, float]
    calibration: _CalibrationModel | None = None  # absent in bundles written before calibration existed


# --- names and the pointer file ----------------------------------------------------------------------------


def check_name(kind: str, name: str) -> str:
    """Site and version names become path components and URL segments: keep them boring."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == CURRENT_POINTER:
        raise ValueError(
            f"invalid {kind} name {name!r}: use 1-100 letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit, and not {CURRENT_POINTER!r}"
        )
    return name


def default_version(fam_version: int, now: datetime | None = None) -> str:
    """``<UTC time to the microsecond>-fam<N>``: names sort by creation time and say which FAM they carry."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%S%f}Z-fam{fam_version}"


def list_sites(root: str | os.PathLike[str]) -> list[str]:
    """Site folders under ``root`` (whether or not they have a bundle yet), sorted."""
    base = Path(root)
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and _NAME.fullmatch(p.name))


def list_versions(root: str | os.PathLike[str], site: str) -> list[str]:
    """Version folders of ``site``, oldest first by name (default names start with the UTC time)."""
    folder = Path(root) / check_name("site", site)
    if not folder.is_dir():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.is_dir() and _NAME.fullmatch(p.name) and p.name != CURRENT_POINTER and (p / MANIFEST_FILE).is_file()
    )


def current_version(root: str | os.PathLike[str], site: str) -> str | None:
    """The version ``<root>/<site>/current`` names, or ``None`` when the site has no bundle yet."""
    pointer = Path(root) / check_name("site", site) / CURRENT_POINTER
    try:
        with pointer.open("rb") as handle:
            raw = handle.read(256)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise BundleError(pointer, f"cannot read the current pointer: {error.strerror or error}") from error
    text = raw.decode("utf-8", errors="replace").strip()
    if not _NAME.fullmatch(text) or text == CURRENT_POINTER:
        raise BundleError(pointer, f"the current pointer does not name a version ({text[:40]!r})")
    return text


def set_current(root: str | os.PathLike[str], site: str, version: str) -> Bundle:
    """Verify ``version`` and point ``current`` at it atomically (also the way to roll back)."""
    bundle = read_bundle(Path(root) / check_name("site", site) / check_name("version", version))
    _write_pointer(Path(root) / site, version)
    return bundle


def _write_pointer(site_dir: Path, version: str) -> None:
    write_atomic(site_dir / CURRENT_POINTER, f"{version}\n".encode())  # readers see the old or the new pointer


# --- writing ------------------------------------------------------------------------------------------------


def _float_tensors(where: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        tensor = value.detach().to("cpu", torch.float32).contiguous()
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{where} tensor {name!r} has non-finite values; refusing to publish it")
        out[name] = tensor
    return out


def _write_file(path: Path, data: bytes) -> str:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return hashlib.sha256(data).hexdigest()


def write_bundle(
    root: str | os.PathLike[str],
    site: str,
    *,
    backbone: Backbone | BackboneRecord,
    classes: Sequence[str],
    prompts: Sequence[str],
    text_prototypes: torch.Tensor,
    fam_state: Mapping[str, torch.Tensor],
    fam_version: int,
    head_state: Mapping[str, torch.Tensor] | None,
    head_hidden: int = DEFAULT_HIDDEN,
    metrics: Mapping[str, float] | None = None,
    version: str | None = None,
    make_current: bool = True,
    fam_privacy: PrivacyGuarantee | None = None,
    head_privacy: PrivacyGuarantee | None = None,
    calibration: Calibration | None = None,
) -> Bundle:
    """Publish a new bundle version for ``site`` and (by default) make it ``current``; return it verified.

    The agent calls this after each round with the global FAM it trained from (``fam_version`` as the
    aggregator numbers it), its private head (``None`` for a site without one: zero-shot only), its class
    list, prompt templates and text prototypes. ``version`` defaults to :func:`default_version`. Versions are
    immutable: an existing name raises ``BundleError``. ``calibration`` (the temperature fitted on the site's
    validation split, with ECE before and after) goes into the manifest; the API applies it. Invalid inputs
    raise ``ValueError`` before anything touches the disk; the new folder is read back and verified before
    ``current`` is switched.
    """
    record = BackboneRecord.of(backbone) if isinstance(backbone, Backbone) else backbone
    check_name("site", site)
    version = check_name("version", version or default_version(fam_version))
    manifest_metrics = {str(k): float(v) for k, v in (metrics or {}).items()}
    if not all(math.isfinite(v) for v in manifest_metrics.values()):
        raise ValueError(f"metrics must be finite numbers, got {manifest_metrics}")
    fam = _float_tensors("FAM", fam_state)
    head = _float_tensors("head", head_state) if head_state is not None else None
    prototypes = _float_tensors("prototype", {_PROTOTYPES_KEY: text_prototypes})
    # Validate with the same checks a reader applies, so a bad bundle is refused here, not in the API.
    _validate_content(
        site, list(classes), list(prompts), record.embed_dim, fam, prototypes[_PROTOTYPES_KEY], head, head_hidden
    )

    site_dir = Path(root) / site
    site_dir.mkdir(parents=True, exist_ok=True)
    final = site_dir / version
    if final.exists():
        raise BundleError(final, "this version already exists; versions are immutable")
    staging = site_dir / f".{version}.{secrets.token_hex(6)}.tmp"
    staging.mkdir()
    try:
        digests = {
            FAM_FILE: _write_file(staging / FAM_FILE, save_safetensors(fam)),
            PROTOTYPES_FILE: _write_file(staging / PROTOTYPES_FILE, save_safetensors(prototypes)),
        }
        if head is not None:
            digests[HEAD_FILE] = _write_file(staging / HEAD_FILE, save_safetensors(head))
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "site": site,
            "version": version,
            "created": datetime.now(UTC).isoformat(),
            "classes": list(classes),
            "prompts": list(prompts),
            "backbone": {
                "model": record.spec.model,
                "weights": record.spec.weights,
                "preprocess": record.spec.preprocess,
                "seed": record.spec.seed,
                "weights_digest": record.weights_digest,
                "embed_dim": record.embed_dim,
                "logit_scale": record.logit_scale,
            },
            "fam": {
                "version": int(fam_version),
                "sha256": digests[FAM_FILE],
                "privacy": None if fam_privacy is None else fam_privacy.to_dict(),
            },
            "head": {
                "sha256": digests[HEAD_FILE],
                "hidden": head_hidden,
                "privacy": None if head_privacy is None else head_privacy.to_dict(),
            }
            if head is not None
            else None,
            "prototypes": {"sha256": digests[PROTOTYPES_FILE]},
            "metrics": manifest_metrics,
            "calibration": calibration.to_dict() if calibration is not None else None,
        }
        _write_file(staging / MANIFEST_FILE, json.dumps(manifest, indent=2, allow_nan=False).encode())
        fsync_dir(staging)
        os.rename(staging, final)  # the version appears complete or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(site_dir)
    bundle = read_bundle(final)  # never point `current` at something a reader would refuse
    if make_current:
        _write_pointer(site_dir, version)
    return bundle


def prune_versions(root: str | os.PathLike[str], site: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` versions (never the current one); return the deleted names."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    current = current_version(root, site)
    versions = list_versions(root, site)
    doomed = [v for v in versions[:-keep] if v != current]
    for name in doomed:
        shutil.rmtree(Path(root) / site / name)
    return doomed


# --- reading ------------------------------------------------------------------------------------------------


def read_current(root: str | os.PathLike[str], site: str) -> Bundle:
    """The verified bundle that ``<root>/<site>/current`` names; ``BundleError`` when there is none."""
    version = current_version(root, site)
    if version is None:
        raise BundleError(Path(root) / site, "no bundle has been published for this site yet")
    return read_bundle(Path(root) / site / version)


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read and verify the version folder ``path`` (``<root>/<site>/<version>``) or raise ``BundleError``.

    Checks, in order: the manifest's schema and format version; that it names this site and version (a
    bundle copied into another site's folder would otherwise serve the wrong private head); every file's
    sha256 on the bytes that are then parsed; tensor names, shapes and finiteness; classes and prompts.
    """
    folder = Path(path)
    manifest = _read_manifest(folder)
    if manifest.site != folder.parent.name or manifest.version != folder.name:
        raise BundleError(
            folder,
            f"manifest names site {manifest.site!r} version {manifest.version!r}, "
            f"but it lies in {folder.parent.name}/{folder.name}",
        )
    fam = _read_tensors(folder, FAM_FILE, manifest.fam.sha256)
    prototypes_file = _read_tensors(folder, PROTOTYPES_FILE, manifest.prototypes.sha256)
    head = _read_tensors(folder, HEAD_FILE, manifest.head.sha256) if manifest.head is not None else None
    if set(prototypes_file) != {_PROTOTYPES_KEY}:
        raise BundleError(folder, f"{PROTOTYPES_FILE} must hold exactly one tensor named {_PROTOTYPES_KEY!r}")
    prototypes = prototypes_file[_PROTOTYPES_KEY]
    head_hidden = manifest.head.hidden if manifest.head is not None else DEFAULT_HIDDEN
    spec = manifest.backbone
    if spec.preprocess not in ("clip", "paper"):
        raise BundleError(folder, f"unknown backbone preprocess {spec.preprocess!r}")
    if not (math.isfinite(spec.logit_scale) and spec.logit_scale > 0):
        raise BundleError(folder, f"backbone logit_scale must be a positive number, got {spec.logit_scale}")
    try:
        _validate_content(
            manifest.site, manifest.classes, manifest.prompts, spec.embed_dim, fam, prototypes, head, head_hidden
        )
    except ValueError as error:
        raise BundleError(folder, str(error)) from error
    record = BackboneRecord(
        BackboneSpec(spec.model, spec.weights, spec.preprocess, spec.seed),  # type: ignore[arg-type]
        spec.weights_digest,
        spec.embed_dim,
        spec.logit_scale,
    )
    calibration = None
    if manifest.calibration is not None:
        try:
            calibration = Calibration(**manifest.calibration.model_dump())
        except ValueError as error:
            raise BundleError(folder, f"{MANIFEST_FILE} calibration is invalid: {error}") from error
    digests = {FAM_FILE: manifest.fam.sha256, PROTOTYPES_FILE: manifest.prototypes.sha256}
    if manifest.head is not None:
        digests[HEAD_FILE] = manifest.head.sha256
    return Bundle(
        site=manifest.site,
        version=manifest.version,
        created=manifest.created,
        classes=tuple(manifest.classes),
        prompts=tuple(manifest.prompts),
        backbone=record,
        fam_version=manifest.fam.version,
        fam_state=fam,
        text_prototypes=prototypes,
        head_state=head,
        head_hidden=head_hidden,
        metrics=dict(manifest.metrics),
        digests=digests,
        path=folder,
        fam_privacy=_guarantee(folder, manifest.fam.privacy),
        head_privacy=_guarantee(folder, manifest.head.privacy if manifest.head is not None else None),
        calibration=calibration,
    )


def _guarantee(folder: Path, model: _PrivacyModel | None) -> PrivacyGuarantee | None:
    if model is None:
        return None
    try:
        return PrivacyGuarantee(model.epsilon, model.delta, model.unit)
    except ValueError as error:
        raise BundleError(folder, f"{MANIFEST_FILE} has an invalid privacy record: {error}") from error


def _read_manifest(folder: Path) -> _ManifestModel:
    path = folder / MANIFEST_FILE
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError as error:
        raise BundleError(folder, f"{MANIFEST_FILE} is missing") from error
    except OSError as error:
        raise BundleError(folder, f"cannot read {MANIFEST_FILE}: {error.strerror or error}") from error
    if len(raw) > _MAX_MANIFEST_BYTES:
        raise BundleError(folder, f"{MANIFEST_FILE} is larger than {_MAX_MANIFEST_BYTES} bytes")
    try:
        data: Any = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(folder, f"{MANIFEST_FILE} is not valid JSON: {error}") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(folder, f"{MANIFEST_FILE} is not a {FORMAT} manifest")
    if data.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            folder,
            f"format_version {data.get('format_version')!r} is not supported (this build reads {FORMAT_VERSION})",
        )
    try:
        return _ManifestModel.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5])
        raise BundleError(folder, f"{MANIFEST_FILE} is malformed: {problems}") from error


def _read_tensors(folder: Path, name: str, expected_sha256: str) -> dict[str, torch.Tensor]:
    try:
        data = (folder / name).read_bytes()
    except FileNotFoundError as error:
        raise BundleError(folder, f"{name} is missing") from error
    except OSError as error:
        raise BundleError(folder, f"cannot read {name}: {error.strerror or error}") from error
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256.lower():
        raise BundleError(folder, f"{name} sha256 {actual[:12]}… does not match the manifest's {expected_sha256[:12]}…")
    try:
        tensors = load_safetensors(data)
    except Exception as error:  # safetensors raises its own and several builtin types for bad bytes
        raise BundleError(folder, f"{name} is not a valid safetensors file: {error}") from error
    for key, tensor in tensors.items():
        if tensor.dtype != torch.float32:
            raise BundleError(folder, f"{name} tensor {key!r} is {tensor.dtype}, expected float32")
    return tensors


def _validate_content(
    site: str,
    classes: list[str],
    prompts: list[str],
    dim: int,
    fam: Mapping[str, torch.Tensor],
    prototypes: torch.Tensor,
    head: Mapping[str, torch.Tensor] | None,
    head_hidden: int,
) -> None:
    """Checks shared by the writer and the reader; raises ``ValueError`` with a precise message."""
    check_name("site", site)
    if len(classes) < 2 or len(set(classes)) != len(classes) or not all(c.strip() for c in classes):
        raise ValueError(f"classes must be at least 2 distinct non-empty names, got {classes[:10]}")
    render_prompts("x", prompts)  # raises ValueError for no templates or a template without one '{}'
    if dim < 1:
        raise ValueError(f"embed_dim must be positive, got {dim}")
    expected = fam_shapes(dim)
    if set(fam) != set(FAM_TENSOR_NAMES):
        raise ValueError(f"FAM tensors must be {sorted(FAM_TENSOR_NAMES)}, got {sorted(fam)}")
    for name, shape in expected.items():
        if tuple(fam[name].shape) != shape:
            raise ValueError(f"FAM tensor {name!r} has shape {tuple(fam[name].shape)}, expected {shape}")
    if tuple(prototypes.shape) != (len(classes), dim):
        raise ValueError(f"prototypes have shape {tuple(prototypes.shape)}, expected ({len(classes)}, {dim})")
    for name, tensor in [*fam.items(), ("prototypes", prototypes), *(head or {}).items()]:
        if not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"tensor {name!r} has non-finite values")
    if head is not None:
        if head_hidden < 1:
            raise ValueError(f"head_hidden must be positive, got {head_hidden}")
        try:
            build_head(dim, len(classes), dict(head), hidden=head_hidden)
        except RuntimeError as error:  # load_state_dict(strict=True) lists missing/unexpected/mis-shaped keys
            raise ValueError(
                f"head does not fit {len(classes)} classes, width {dim}, hidden {head_hidden}: {error}"
            ) from error


def check_compatible(bundle: Bundle, backbone: Backbone) -> None:
    """Raise ``BundleError`` unless ``bundle`` was built for exactly this frozen backbone.

    The weights *digest* decides, not the weights string: the agent and the API may name the same file by
    different paths (a container mount), and two different files under one name must not pass.
    """
    where = bundle.path or f"{bundle.site}/{bundle.version}"
    recorded = bundle.backbone
    problems = []
    if recorded.spec.model != backbone.spec.model:
        problems.append(f"model {recorded.spec.model!r} ≠ loaded {backbone.spec.model!r}")
    if recorded.spec.preprocess != backbone.spec.preprocess:
        problems.append(f"preprocess {recorded.spec.preprocess!r} ≠ loaded {backbone.spec.preprocess!r}")
    if recorded.weights_digest != backbone.weights_digest:
        problems.append(f"weights digest {recorded.weights_digest[:12]}… ≠ loaded {backbone.weights_digest[:12]}…")
    if recorded.embed_dim != backbone.embed_dim:
        problems.append(f"embedding width {recorded.embed_dim} ≠ loaded {backbone.embed_dim}")
    if not math.isclose(recorded.logit_scale, backbone.logit_scale, rel_tol=1e-4):
        problems.append(f"logit scale {recorded.logit_scale:.4f} ≠ loaded {backbone.logit_scale:.4f}")
    if problems:
        raise BundleError(where, "built for a different backbone: " + "; ".join(problems))


__all__ = [
    "CURRENT_POINTER",
    "FAM_FILE",
    "FORMAT_VERSION",
    "HEAD_FILE",
    "MANIFEST_FILE",
    "PROTOTYPES_FILE",
    "BackboneRecord",
    "Bundle",
    "BundleError",
    "check_compatible",
    "check_name",
    "current_version",
    "default_version",
    "list_sites",
    "list_versions",
    "prune_versions",
    "read_bundle",
    "read_current",
    "set_current",
    "write_bundle",
]
