"""Backbone packs: a frozen CLIP as a self-contained folder of files that loads with no network (docs/design.md §3.1).

This module defines the format and reads it (``verify``, ``load``); ``fedmedclip.model.packing`` writes it.

A pack holds everything that changes an embedding, each file listed with its sha256 in ``manifest.json``:

- ``open_clip_config.json``: the architecture in open_clip's hub layout (``model_cfg`` + ``preprocess_cfg``);
- ``open_clip_model.safetensors``: the weights, always safetensors (a pickle source is read only with
  ``torch.load(weights_only=True)``, so packing never runs code from a checkpoint);
- ``tokenizer/`` (open_clip's own BPE vocabulary) or, for a Hugging Face text tower such as PubMedBERT, ``text/``
  with the tower's ``config.json`` and its tokenizer files.

The pack's digest is the sha256 of the sorted ``"<sha256>  <path>\\n"`` lines of every file except the manifest
(``sha256sum`` output, so it can be recomputed by hand). Loading a pack verifies every file first, builds the
model from the pack's config with the text tower pointed at ``text/`` and ``hf_model_pretrained`` off, and uses
the digest as the backbone's ``weights_digest``: a run that pins it admits only sites with the very same pack.

The threat this guards against is accidental drift (a re-downloaded or truncated file, another tokenizer),
not a hostile pack: whoever can write the pack folder can also write its manifest.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

MANIFEST = "manifest.json"
CONFIG = "open_clip_config.json"
WEIGHTS = "open_clip_model.safetensors"
TEXT_DIR = "text"  # Hugging Face text tower: config.json + tokenizer files
TOKENIZER_DIR = "tokenizer"  # open_clip text tower: the BPE vocabulary
BPE_VOCAB = "bpe_simple_vocab_16e6.txt.gz"
PACK_FORMAT = "fedmedclip-backbone-pack"
PACK_FORMAT_VERSION = 1
KNOWN_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "backbones"

_HASH_CHUNK = 1 << 20


class PackError(ValueError):
    """A pack cannot be made or used; the message is one line naming the file and what is wrong."""


@dataclass(frozen=True)
class PackManifest:
    """What ``manifest.json`` records."""

    model: str
    digest: str
    files: Mapping[str, str]  # relative path -> sha256
    text_tower: str  # "hf" or "open_clip"
    embed_dim: int
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PACK_FORMAT,
            "format_version": PACK_FORMAT_VERSION,
            "model": self.model,
            "digest": self.digest,
            "text_tower": self.text_tower,
            "embed_dim": self.embed_dim,
            "source": self.source,
            "files": dict(sorted(self.files.items())),
        }


@dataclass
class LoadedPack:
    """A pack built into a frozen-ready model, with its tokenizer and preprocessing settings."""

    manifest: PackManifest
    model: Any  # open_clip.CLIP or CustomTextCLIP
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    transform: Callable[[Image.Image], torch.Tensor]


# --- hashing -----------------------------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def pack_digest(files: Mapping[str, str]) -> str:
    """sha256 of ``sha256sum``-style lines, sorted by path: the same files give the same digest anywhere."""
    listing = "".join(f"{sha}  {name}\n" for name, sha in sorted(files.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def pack_files(root: Path) -> list[str]:
    names = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise PackError(f"{path}: symbolic links are not allowed in a pack")
        if path.is_file() and path.name != MANIFEST:
            names.append(path.relative_to(root).as_posix())
    return names


# --- configs -------------------------------------------------------------------------------------------------------


def known_configs() -> dict[str, Path]:
    """The shipped architecture configs (``configs/backbones/*.json``) by name."""
    if not KNOWN_CONFIG_DIR.is_dir():
        return {}
    return {path.stem: path for path in sorted(KNOWN_CONFIG_DIR.glob("*.json"))}


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackError(f"{what} {path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PackError(f"{what} {path} is not readable JSON: {error}") from None
    if not isinstance(data, dict):
        raise PackError(f"{what} {path} must be a JSON object")
    return data


def read_config(name_or_path: str | Path) -> dict[str, Any]:
    """An open_clip config as hub layout (``model_cfg``, ``preprocess_cfg``, optional ``fedmedclip`` notes).

    Accepts a known config name, a hub-layout ``open_clip_config.json`` or a plain open_clip model config
    (``embed_dim``/``vision_cfg``/``text_cfg`` at the top level).
    """
    known = known_configs()
    path = known[str(name_or_path)] if str(name_or_path) in known else Path(name_or_path).expanduser()
    if not path.is_file():
        names = ", ".join(known) or "none shipped"
        raise PackError(f"config {name_or_path!r} is neither a JSON file nor a known config ({names})")
    data = read_json(path, "config")
    if "model_cfg" not in data and {"embed_dim", "vision_cfg", "text_cfg"} <= data.keys():
        data = {"model_cfg": data, "preprocess_cfg": {}}
    check_model_cfg(data.get("model_cfg"), path)
    text_cfg = data["model_cfg"]["text_cfg"]
    if text_cfg.get("hf_model_name"):
        # Older hub configs (BiomedCLIP before 2024) spell the Hugging Face tower's settings without the prefix.
        for old, new in (("proj", "hf_proj_type"), ("pooler_type", "hf_pooler_type")):
            if old in text_cfg:
                text_cfg.setdefault(new, text_cfg.pop(old))
    return data


def check_model_cfg(model_cfg: object, where: object) -> None:
    if not isinstance(model_cfg, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= model_cfg.keys():
        raise PackError(
            f"{where}: unknown config format (expected open_clip's model_cfg with embed_dim, vision_cfg, text_cfg)"
        )
    if not isinstance(model_cfg["vision_cfg"], dict) or not isinstance(model_cfg["text_cfg"], dict):
        raise PackError(f"{where}: vision_cfg and text_cfg must be JSON objects")
    if "multimodal_cfg" in model_cfg:
        raise PackError(f"{where}: CoCa models (multimodal_cfg) are not supported as backbones")


def is_hf_text(model_cfg: Mapping[str, Any]) -> bool:
    return bool(model_cfg["text_cfg"].get("hf_model_name"))


def matching_known_name(config: Mapping[str, Any]) -> str | None:
    """The ``fedmedclip.model`` name of a shipped config with the same architecture, if any."""
    wanted = architecture(config["model_cfg"])
    for path in known_configs().values():
        known = read_json(path, "config")
        if architecture(known["model_cfg"]) == wanted:
            return str(known.get("fedmedclip", {}).get("model") or path.stem)
    return None


def architecture(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A config without the hub names of its text tower and the timm "pretrained" switch, which do not shape it."""
    cfg = copy.deepcopy(dict(model_cfg))
    for key in ("hf_model_name", "hf_tokenizer_name", "hf_model_pretrained"):
        cfg["text_cfg"].pop(key, None)
    cfg["vision_cfg"].pop("timm_model_pretrained", None)
    return cfg


# --- building a model from a config ----------------------------------------------------------------------------------


def build_model(model_cfg: Mapping[str, Any], text_dir: Path | None) -> Any:
    """The open_clip model for ``model_cfg`` with random weights and no download of any kind.

    A Hugging Face text tower is built from ``text_dir/config.json`` (``hf_model_pretrained`` off); a timm image
    tower with ``timm_model_pretrained`` off. Callers load the real weights afterwards.
    """
    from open_clip.model import CLIP, CustomTextCLIP

    cfg = copy.deepcopy(dict(model_cfg))
    cfg["vision_cfg"]["timm_model_pretrained"] = False
    hf = is_hf_text(cfg)
    if hf:
        if text_dir is None or not (text_dir / "config.json").is_file():
            raise PackError("the Hugging Face text tower needs its config.json (text/config.json in a pack)")
        cfg["text_cfg"]["hf_model_name"] = str(text_dir)
        cfg["text_cfg"]["hf_tokenizer_name"] = str(text_dir)
        cfg["text_cfg"]["hf_model_pretrained"] = False
    custom_text = bool(cfg.pop("custom_text", False)) or hf
    try:
        if custom_text:
            return CustomTextCLIP(**cfg)
        return CLIP(**cfg)
    except ImportError as error:
        raise PackError(
            f"this backbone needs an optional library ({error}); Hugging Face text towers need fedmedclip[hf-text]"
        ) from None
    except (TypeError, ValueError, KeyError, RuntimeError, OSError) as error:
        raise PackError(f"cannot build the model from its config: {error}") from None


def _tokenizer(model_cfg: Mapping[str, Any], root: Path) -> Callable[[Sequence[str]], torch.Tensor]:
    text_cfg = model_cfg["text_cfg"]
    context_length = int(text_cfg.get("context_length", 77))
    kwargs = dict(text_cfg.get("tokenizer_kwargs", {}))
    if is_hf_text(model_cfg):
        from open_clip.tokenizer import HFTokenizer

        return HFTokenizer(
            str(root / TEXT_DIR), context_length=context_length, tokenizer_mode=text_cfg.get("tokenizer_mode"), **kwargs
        )
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(bpe_path=str(root / TOKENIZER_DIR / BPE_VOCAB), context_length=context_length, **kwargs)


def _transform(model: Any, preprocess_cfg: Mapping[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    merged = merge_preprocess_dict(PreprocessCfg(), dict(preprocess_cfg))
    merged["size"] = model.visual.image_size
    model.visual.preprocess_cfg = merged  # what open_clip's own factory records
    return image_transform_v2(PreprocessCfg(**merged), is_train=False)


# --- verifying and loading -------------------------------------------------------------------------------------------


def is_pack(path: Path) -> bool:
    return path.is_dir() and (path / MANIFEST).is_file()


def read_manifest(root: Path) -> PackManifest:
    data = read_json(root / MANIFEST, "pack manifest")
    if data.get("format") != PACK_FORMAT:
        raise PackError(f"{root / MANIFEST}: unknown format {data.get('format')!r} (expected {PACK_FORMAT!r})")
    version = data.get("format_version")
    if version != PACK_FORMAT_VERSION:
        raise PackError(
            f"{root / MANIFEST}: unknown format_version {version!r} (this version reads {PACK_FORMAT_VERSION})"
        )
    files = data.get("files")
    fields_ok = (
        isinstance(files, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
        and isinstance(data.get("model"), str)
        and isinstance(data.get("digest"), str)
        and data.get("text_tower") in ("hf", "open_clip")
        and isinstance(data.get("embed_dim"), int)
    )
    if not fields_ok:
        raise PackError(f"{root / MANIFEST}: malformed manifest (model, digest, text_tower, embed_dim, files)")
    assert isinstance(files, dict)
    for relative in files:
        if relative.startswith("/") or ".." in Path(relative).parts:
            raise PackError(f"{root / MANIFEST}: file path {relative!r} leaves the pack")
    return PackManifest(
        model=data["model"],
        digest=data["digest"],
        files=files,
        text_tower=data["text_tower"],
        embed_dim=data["embed_dim"],
        source=str(data.get("source", "")),
    )


def verify(root: Path) -> PackManifest:
    """Check that every listed file is present with its sha256, nothing else is there, and the digest holds."""
    root = root.expanduser()
    if not root.is_dir():
        raise PackError(f"pack {root} is not a folder")
    if not (root / MANIFEST).is_file():
        raise PackError(f"{root}: not a backbone pack ({MANIFEST} is missing)")
    manifest = read_manifest(root)
    required = [CONFIG, WEIGHTS]
    required.append(f"{TEXT_DIR}/config.json" if manifest.text_tower == "hf" else f"{TOKENIZER_DIR}/{BPE_VOCAB}")
    for relative in required:
        if relative not in manifest.files:
            raise PackError(f"{root / MANIFEST}: does not list the required file {relative}")
    present = set(pack_files(root))
    for relative, expected in sorted(manifest.files.items()):
        if relative not in present:
            raise PackError(f"{root / relative}: missing file")
        actual = file_sha256(root / relative)
        if actual != expected:
            raise PackError(f"{root / relative}: digest mismatch (sha256 {actual}, manifest says {expected})")
    extra = sorted(present - set(manifest.files))
    if extra:
        raise PackError(f"{root / extra[0]}: file not listed in the manifest")
    digest = pack_digest(manifest.files)
    if digest != manifest.digest:
        raise PackError(
            f"{root / MANIFEST}: pack digest mismatch (files give {digest}, manifest says {manifest.digest})"
        )
    return manifest


def load(root: Path) -> LoadedPack:
    """Verify the pack and build its model, tokenizer and image transform from its files only."""
    manifest = verify(root)
    cfg = read_json(root / CONFIG, "pack config")
    model_cfg = cfg.get("model_cfg")
    check_model_cfg(model_cfg, root / CONFIG)
    assert isinstance(model_cfg, dict)
    if is_hf_text(model_cfg) != (manifest.text_tower == "hf"):
        raise PackError(f"{root / MANIFEST}: text_tower {manifest.text_tower!r} does not match the config")
    model = build_model(model_cfg, root / TEXT_DIR)
    from safetensors.torch import load_model

    try:
        load_model(model, str(root / WEIGHTS), strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise PackError(f"{root / WEIGHTS}: the weights do not fit the pack's config ({first})") from None
    try:
        tokenizer = _tokenizer(model_cfg, root)
    except (OSError, ValueError, gzip.BadGzipFile) as error:
        raise PackError(f"{root}: cannot load the tokenizer: {error}") from None
    return LoadedPack(manifest, model, tokenizer, _transform(model, cfg.get("preprocess_cfg") or {}))


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    # Sorted keys and a fixed layout: packing the same inputs twice gives byte-identical files.
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
