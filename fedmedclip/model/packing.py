"""Writing backbone packs (``fedmedclip backbone pack``): a downloaded model folder or checkpoint in, a pack out.

The weights are loaded into the architecture the config describes (strictly: a pack must fit exactly) and the
model's own state is written as safetensors, so the same inputs always give the same pack digest.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch

from fedmedclip.model.packs import (
    BPE_VOCAB,
    CONFIG,
    MANIFEST,
    TEXT_DIR,
    TOKENIZER_DIR,
    WEIGHTS,
    PackError,
    PackManifest,
    architecture,
    build_model,
    file_sha256,
    is_hf_text,
    matching_known_name,
    pack_digest,
    pack_files,
    read_config,
    read_json,
    write_json,
)

# Checkpoint names a downloaded model folder uses, best first (safetensors before pickles).
SOURCE_CHECKPOINTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "model.safetensors",
    "open_clip_pytorch_model.bin",
    "pytorch_model.bin",
)
CHECKPOINT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Files a Hugging Face tokenizer may read; copied into text/ when the source has them.
HF_TOKENIZER_FILES = (
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_HF_VOCAB_FILES = ("vocab.txt", "vocab.json", "tokenizer.json", "spiece.model", "sentencepiece.bpe.model")


def _source_checkpoint(source: Path) -> Path:
    if source.is_file():
        return source
    for name in SOURCE_CHECKPOINTS:
        if (source / name).is_file():
            return source / name
    candidates = sorted(p for p in source.iterdir() if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise PackError(f"{source}: no checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}) in the model folder")
    raise PackError(f"{source}: several checkpoints ({', '.join(p.name for p in candidates)}); pass the file itself")


def _text_config(
    model_cfg: Mapping[str, Any], config: Mapping[str, Any], folders: Sequence[Path], text_config: Path | None
) -> dict[str, Any]:
    """The Hugging Face text tower's config.json: given, in the model folder, or carried by a shipped config."""
    if text_config is not None:
        return read_json(text_config, "text-tower config")
    for folder in folders:
        candidate = folder / "config.json"
        if candidate.is_file():
            data = read_json(candidate, "text-tower config")
            if "model_type" in data:
                return data
    carried = config.get("fedmedclip", {}).get("text_config")
    if isinstance(carried, dict):
        return dict(carried)
    name = model_cfg["text_cfg"].get("hf_model_name")
    raise PackError(
        f"the text tower {name} needs its Hugging Face config.json: put it in the model folder, pass --text-config, "
        "or use a shipped --config that carries it"
    )


def _copy_tokenizer(model_cfg: Mapping[str, Any], folders: Sequence[Path], staging: Path) -> None:
    if is_hf_text(model_cfg):
        target = staging / TEXT_DIR
        copied = []
        for name in HF_TOKENIZER_FILES:
            for folder in folders:
                if (folder / name).is_file():
                    shutil.copyfile(folder / name, target / name)
                    copied.append(name)
                    break
        if not set(copied) & set(_HF_VOCAB_FILES):
            where = ", ".join(str(f) for f in folders)
            raise PackError(
                f"no tokenizer vocabulary ({', '.join(_HF_VOCAB_FILES)}) for the Hugging Face text tower in {where}; "
                "pass --tokenizer DIR"
            )
        return
    (staging / TOKENIZER_DIR).mkdir()
    for folder in folders:
        if (folder / BPE_VOCAB).is_file():
            shutil.copyfile(folder / BPE_VOCAB, staging / TOKENIZER_DIR / BPE_VOCAB)
            return
    # open_clip models share one BPE vocabulary, shipped with open_clip; the pack carries its own copy.
    shutil.copyfile(Path(open_clip.__file__).parent / BPE_VOCAB, staging / TOKENIZER_DIR / BPE_VOCAB)


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors. Pickles go through ``torch.load(weights_only=True)`` and nothing else: open_clip's
    own reader falls back to a full unpickle on ``TypeError``, which would run a hostile file's code."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: object = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load and safetensors raise many unrelated types for a foreign file
        message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise PackError(f"{path}: unknown checkpoint format ({error.__class__.__name__}: {message})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded:
        raise PackError(f"{path}: unknown checkpoint format (not a state dict of tensors)")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
        raise PackError(f"{path}: unknown checkpoint format (holds entries other than named tensors)")
    if all(key.startswith("module.") for key in loaded):  # saved from DistributedDataParallel
        loaded = {key[len("module.") :]: value for key, value in loaded.items()}
    return loaded


def _load_source_weights(model: Any, checkpoint: Path) -> None:
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict

    state = read_checkpoint(checkpoint)
    try:
        # The same renames open_clip applies to older or third-party layouts; no resizing: a pack must fit exactly.
        state = convert_state_dict(model, state)
        if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
            state = convert_to_custom_text_state_dict(state)
        if "logit_scale" in state and model.logit_scale.ndim != state["logit_scale"].ndim:
            state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
        # transformers >= 4.31 no longer stores BERT's position_ids, older BiomedCLIP checkpoints do.
        state.pop("text.transformer.embeddings.position_ids", None)
        model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError, AssertionError) as error:
        lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
        detail = "; ".join(lines[:2])[:300] or error.__class__.__name__
        raise PackError(f"{checkpoint}: the weights do not fit the config ({detail})") from None


def pack(
    source: Path,
    out: Path,
    *,
    config: str | Path | None = None,
    model_name: str | None = None,
    text_config: Path | None = None,
    tokenizer_dir: Path | None = None,
) -> PackManifest:
    """Turn a downloaded model folder (or a checkpoint file plus ``config``) into a verified pack at ``out``.

    The pack is written to a sibling temporary folder and renamed into place, so ``out`` is either absent or
    complete. ``out`` must not exist yet.
    """
    source = source.expanduser()
    out = out.expanduser()
    if not source.exists():
        raise PackError(f"source {source} does not exist")
    if out.exists():
        raise PackError(f"output {out} already exists; choose a new folder")
    folder = source if source.is_dir() else source.parent
    own = read_config(folder / CONFIG) if (folder / CONFIG).is_file() else None
    if config is None:
        if own is None:
            raise PackError(f"{folder}: no {CONFIG}; pass --config (a known name or an open_clip config JSON)")
        cfg = own
    else:
        cfg = read_config(config)
        if own is not None and architecture(own["model_cfg"]) != architecture(cfg["model_cfg"]):
            raise PackError(f"{folder / CONFIG} describes another architecture than --config {config}")
    model_cfg = cfg["model_cfg"]
    name = model_name or cfg.get("fedmedclip", {}).get("model")
    if not name:
        match = matching_known_name(cfg)
        hint = f" (the architecture matches the shipped config of {match})" if match else ""
        raise PackError(f"name the model with --model, the name runs and agents use for it{hint}")
    folders = [tokenizer_dir.expanduser()] if tokenizer_dir is not None else []
    folders.append(folder)
    checkpoint = _source_checkpoint(source)

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        hf = is_hf_text(model_cfg)
        if hf:
            (staging / TEXT_DIR).mkdir()
            text = _text_config(model_cfg, cfg, folders, text_config)
            write_json(staging / TEXT_DIR / "config.json", text)
        _copy_tokenizer(model_cfg, folders, staging)
        stored = {"model_cfg": model_cfg, "preprocess_cfg": cfg.get("preprocess_cfg", {})}
        write_json(staging / CONFIG, stored)

        rng = torch.random.get_rng_state()
        try:
            model = build_model(model_cfg, staging / TEXT_DIR if hf else None)
        finally:
            torch.random.set_rng_state(rng)
        _load_source_weights(model, checkpoint)
        from safetensors.torch import save_model

        save_model(model, str(staging / WEIGHTS))  # save_model de-duplicates shared tensors
        files = {relative: file_sha256(staging / relative) for relative in pack_files(staging)}
        manifest = PackManifest(
            model=str(name),
            digest=pack_digest(files),
            files=files,
            text_tower="hf" if hf else "open_clip",
            embed_dim=int(model_cfg["embed_dim"]),
            source=source.name,
        )
        write_json(staging / MANIFEST, manifest.to_json())
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest
