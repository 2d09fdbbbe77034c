"""The frozen CLIP backbone: explicit weight resolution, frozen eval-mode encoders, prototype building.

Weights are named by one string and resolved explicitly (docs/design.md §3.1):
- ``None`` / ``"none"`` / ``"random"``: random initialisation from ``seed`` (tests, demos without weights);
- an existing file (``.safetensors``, ``.bin``, ``.pt``, ``.pth``): loaded directly;
- a backbone pack (a directory with ``manifest.json``, ``fedmedclip backbone pack``): verified, then built from
  its own config, weights and tokenizer with no network at all; its digest is the ``weights_digest``;
- an existing directory: the open_clip checkpoint inside it (``open_clip_model.safetensors`` preferred);
- anything else: an open_clip pretrained tag for the model (``openai``, ``laion2b_s34b_b79k``...). With
  ``HF_HUB_OFFLINE=1`` a tag that is not already in the local cache fails at once with a clear message.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from fedmedclip.model import packs
from fedmedclip.model.prompts import DEFAULT_TEMPLATES, render_prompts

CONFIG_DIR = Path(__file__).parent / "configs"
TINY_MODEL = "fedmedclip-tiny"
RANDOM_WEIGHTS = frozenset({"", "none", "random"})
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_PREFERRED_CHECKPOINTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "model.safetensors",
    "open_clip_pytorch_model.bin",
    "pytorch_model.bin",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Preprocess = Literal["clip", "paper"]

open_clip.add_model_config(CONFIG_DIR)


class WeightsUnavailableError(RuntimeError):
    """The requested backbone weights cannot be found or fetched."""


@dataclass(frozen=True)
class BackboneSpec:
    """Which frozen CLIP to use. Two sites with equal specs and weight digests compute equal embeddings."""

    model: str = "ViT-B-32"
    weights: str | None = "openai"
    preprocess: Preprocess = "clip"
    seed: int = 0  # only used for random initialisation

    @property
    def is_random(self) -> bool:
        return self.weights is None or self.weights.strip().lower() in RANDOM_WEIGHTS

    def describe(self) -> str:
        weights = "random-init" if self.is_random else self.weights
        return f"{self.model} ({weights}, preprocess={self.preprocess})"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _checkpoint_in_dir(directory: Path) -> Path:
    for name in _PREFERRED_CHECKPOINTS:
        if (directory / name).is_file():
            return directory / name
    candidates = sorted(p for p in directory.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise WeightsUnavailableError(f"no checkpoint ({', '.join(WEIGHT_SUFFIXES)}) in weights directory {directory}")
    names = ", ".join(p.name for p in candidates)
    raise WeightsUnavailableError(f"several checkpoints in {directory} ({names}); name one file explicitly")


def _resolve_tag(model: str, tag: str) -> Path:
    known = open_clip.list_pretrained_tags_by_model(model)
    if tag not in known:
        hint = (
            f"known tags for {model}: {', '.join(known)}" if known else f"open_clip has no pretrained tags for {model}"
        )
        raise WeightsUnavailableError(
            f"weights {tag!r} are neither an existing file or directory nor a pretrained tag ({hint})"
        )
    cfg = open_clip.get_pretrained_cfg(model, tag)
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import hf_hub_download

        repo_id, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        last_error: Exception | None = None
        for name in names:
            try:
                return Path(hf_hub_download(repo_id=repo_id, filename=name, local_files_only=_offline()))
            except Exception as error:  # the hub raises several unrelated types for "not there"
                last_error = error
        raise WeightsUnavailableError(_unavailable_message(model, tag, f"{repo_id} ({last_error.__class__.__name__})"))
    url = cfg.get("url", "")
    cached = Path("~/.cache/clip").expanduser() / os.path.basename(url)
    if cached.is_file():
        return cached
    if _offline() or not url:
        raise WeightsUnavailableError(_unavailable_message(model, tag, url or "no download source"))
    return Path(open_clip.download_pretrained_from_url(url))


def _unavailable_message(model: str, tag: str, source: str) -> str:
    mode = "HF_HUB_OFFLINE is set and they are not in the local cache" if _offline() else "the download failed"
    return (
        f"pretrained weights {model}/{tag} are unavailable: {mode} (source: {source}). "
        "Give a local weights file or directory instead (weights: /path/to/open_clip_model.safetensors), "
        "or 'random' for a random-init backbone."
    )


def resolve_weights(spec: BackboneSpec) -> Path | None:
    """The local checkpoint file for ``spec``, or ``None`` for random initialisation."""
    if spec.is_random:
        return None
    assert spec.weights is not None
    path = Path(spec.weights).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        return _checkpoint_in_dir(path)
    if path.suffix in WEIGHT_SUFFIXES or os.sep in spec.weights:
        raise WeightsUnavailableError(f"weights file or directory {spec.weights!r} does not exist")
    return _resolve_tag(spec.model, spec.weights)


def state_digest(module: torch.nn.Module) -> str:
    """sha256 over every tensor of ``module`` in key order: identifies the exact weights."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


def _paper_transform(image_size: int) -> Callable[[Image.Image], torch.Tensor]:
    return transforms.Compose(
        [
            transforms.Lambda(lambda image: image.convert("RGB")),
            transforms.Resize((image_size, image_size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


@dataclass
class Backbone:
    """A loaded, frozen CLIP with the helpers the method needs."""

    spec: BackboneSpec
    model: Any  # open_clip.CLIP; typed loosely because open_clip ships no type information
    transform: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[[Sequence[str]], torch.Tensor]
    device: torch.device
    weights_digest: str
    image_size: int
    embed_dim: int
    logit_scale: float = field(init=False)

    def __post_init__(self) -> None:
        self.logit_scale = float(self.model.logit_scale.detach().exp().item())

    @property
    def cache_namespace(self) -> str:
        """Everything that changes an image embedding: model, weights and preprocessing."""
        return f"{self.spec.model}|{self.weights_digest}|{self.spec.preprocess}"

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        with torch.inference_mode():
            if self.device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    yield
            else:
                yield

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        return self.transform(image)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) float32 image embeddings ``f`` for a preprocessed batch (B × 3 × H × W)."""
        with self._inference():
            features = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        return features.float()

    def encode_pil(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.encode_images(torch.stack([self.preprocess(image) for image in images]))

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised float32 text embeddings."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        with self._inference():
            features = self.model.encode_text(tokens)
        return F.normalize(features.float(), dim=-1)

    def class_prototypes(self, classes: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> torch.Tensor:
        """``T``: one normalised text embedding per class, templates averaged before normalising (C × D)."""
        rows = []
        for name in classes:
            rows.append(self.encode_texts(render_prompts(name, templates)).mean(dim=0))
        return F.normalize(torch.stack(rows), dim=-1).cpu()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _pack_root(spec: BackboneSpec) -> Path | None:
    if spec.is_random or spec.weights is None:
        return None
    path = Path(spec.weights).expanduser()
    return path if packs.is_pack(path) else None


def _load_pack(spec: BackboneSpec, root: Path) -> tuple[Any, Callable[[Image.Image], torch.Tensor], Any, str]:
    """Model, transform, tokenizer and digest of the pack at ``root``; the spec must name the pack's model."""
    rng = torch.random.get_rng_state()
    try:
        loaded = packs.load(root)
    except packs.PackError as error:
        raise WeightsUnavailableError(f"backbone pack {root}: {error}") from None
    finally:
        torch.random.set_rng_state(rng)
    if loaded.manifest.model != spec.model:
        raise WeightsUnavailableError(
            f"backbone pack {root} holds model {loaded.manifest.model!r}, but the backbone spec names {spec.model!r}; "
            f"set model: {loaded.manifest.model}"
        )
    return loaded.model, loaded.transform, loaded.tokenizer, loaded.manifest.digest


def load_backbone(spec: BackboneSpec, device: torch.device | str | None = None) -> Backbone:
    """Build the frozen backbone for ``spec``; raises ``WeightsUnavailableError`` fast when weights are missing."""
    if spec.preprocess not in ("clip", "paper"):
        raise ValueError(f"preprocess must be 'clip' or 'paper', got {spec.preprocess!r}")
    target = torch.device(device) if device is not None else default_device()
    pack_root = _pack_root(spec)
    if pack_root is not None:
        model, clip_transform, tokenizer, digest = _load_pack(spec, pack_root)
    else:
        model, clip_transform = _load_open_clip(spec)
        tokenizer = open_clip.get_tokenizer(spec.model)
    model.eval().requires_grad_(False)
    if pack_root is None:
        digest = state_digest(model)  # a pack's digest already covers its weights, config and tokenizer
    model.to(target)
    image_size = model.visual.image_size
    size = int(image_size[0] if isinstance(image_size, tuple | list) else image_size)
    transform = clip_transform if spec.preprocess == "clip" else _paper_transform(size)
    return Backbone(
        spec=spec,
        model=model,
        transform=transform,
        tokenizer=tokenizer,
        device=target,
        weights_digest=digest,
        image_size=size,
        embed_dim=_embed_dim(model),
    )


def _load_open_clip(spec: BackboneSpec) -> tuple[Any, Callable[[Image.Image], torch.Tensor]]:
    if spec.model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {spec.model!r} (e.g. ViT-B-32, ViT-B-16, {TINY_MODEL})")
    checkpoint = resolve_weights(spec)
    rng = torch.random.get_rng_state()
    torch.manual_seed(spec.seed)
    try:
        model, _, clip_transform = open_clip.create_model_and_transforms(
            spec.model, pretrained=str(checkpoint) if checkpoint else None, device="cpu"
        )
    except RuntimeError as error:
        raise WeightsUnavailableError(f"weights {checkpoint} do not fit model {spec.model}: {error}") from error
    finally:
        torch.random.set_rng_state(rng)
    return model, clip_transform


def _embed_dim(model: Any) -> int:
    """The joint embedding width: a CLIP text projection's columns, or a Hugging Face tower's output size."""
    projection = getattr(model, "text_projection", None)
    if projection is not None:
        return int(projection.shape[1])
    output_dim = getattr(getattr(model, "text", None), "output_dim", None)
    if isinstance(output_dim, int):
        return output_dim
    with torch.inference_mode():
        image_size = model.visual.image_size
        side = image_size if isinstance(image_size, int) else image_size[0]
        return int(model.encode_image(torch.zeros(1, 3, side, side)).shape[-1])
