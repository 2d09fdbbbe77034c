"""Downloaded-model folders as they come from the hub, built locally with random weights (no download).

``write_snapshot`` lays out what ``huggingface-cli download`` gives for an open_clip hub model:
``open_clip_config.json`` (hub layout, the text tower still named by its hub id), the weights as a pickle
``open_clip_pytorch_model.bin`` and, for a BERT text tower, the tokenizer files but no BERT ``config.json``
(BiomedCLIP's snapshot has none). The model is the real architecture of the given config.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from fedmedclip.model import packs

WORDS = ("a", "picture", "of", "an", "image", "dermoscopy", "skin", "lesion", "melanoma", "nevus", "benign", "tumor")
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def known(name: str) -> dict[str, Any]:
    return packs.read_config(name)


def shrunk_biomedclip() -> dict[str, Any]:
    """Test-only BiomedCLIP family member: the same tower types (timm ViT/16, BERT with an MLP projection and
    CLS pooling, 256 tokens), with a 192-wide timm ViT and a 2-layer, 64-wide BERT, so a test builds in ~1 s."""
    cfg = copy.deepcopy(known("biomedclip-vit-b-16-pubmedbert-256"))
    cfg["model_cfg"]["vision_cfg"]["timm_model_name"] = "vit_tiny_patch16_224"
    text = cfg["fedmedclip"]["text_config"]
    text.update(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    cfg["fedmedclip"]["model"] = "biomedclip-shrunk"
    return cfg


def write_bert_tokenizer(folder: Path) -> None:
    (folder / "vocab.txt").write_text("\n".join(BERT_SPECIALS + WORDS) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer"}),
        encoding="utf-8",
    )
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]"}),
        encoding="utf-8",
    )


def write_snapshot(config: dict[str, Any], folder: Path, *, seed: int = 0, bert_config: bool = False) -> Any:
    """Write a hub-style model folder for ``config`` with random weights; returns the source model."""
    folder.mkdir(parents=True)
    model_cfg = config["model_cfg"]
    text_dir = None
    if packs.is_hf_text(model_cfg):
        text_dir = folder / "_bert"  # only to build the tower; hub snapshots do not carry it
        text_dir.mkdir()
        (text_dir / "config.json").write_text(json.dumps(config["fedmedclip"]["text_config"]), encoding="utf-8")
        write_bert_tokenizer(folder)
    torch.manual_seed(seed)
    model = packs.build_model(model_cfg, text_dir).eval()
    with torch.no_grad():  # random init leaves logit_scale at its default; make it the weights' own value
        model.logit_scale.fill_(4.0 + seed / 10)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    hub = {"model_cfg": model_cfg, "preprocess_cfg": config.get("preprocess_cfg", {})}
    (folder / packs.CONFIG).write_text(json.dumps(hub), encoding="utf-8")
    if text_dir is not None:
        if bert_config:
            (folder / "config.json").write_text((text_dir / "config.json").read_text())
        for path in text_dir.iterdir():
            path.unlink()
        text_dir.rmdir()
    return model


@contextlib.contextmanager
def network_blocked() -> Iterator[list[str]]:
    """Every outgoing connection raises; the yielded list records each attempt (a caught attempt still counts).

    The hub's offline switch (which the test suite sets) is turned off meanwhile, so a loader that would go to
    the hub really tries to connect instead of quietly being kept offline by the environment.
    """
    import huggingface_hub.constants as hub_constants

    attempts: list[str] = []
    offline = hub_constants.HF_HUB_OFFLINE
    environment = {name: os.environ.pop(name, None) for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    hub_constants.HF_HUB_OFFLINE = False

    def refuse(*args: object, **_kwargs: object) -> Any:
        attempts.append(repr(args[1:] if args and isinstance(args[0], socket.socket) else args))
        raise OSError("network blocked by the test")

    saved = (socket.socket.connect, socket.socket.connect_ex, socket.create_connection)
    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = refuse
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.create_connection = saved  # type: ignore[method-assign]
        hub_constants.HF_HUB_OFFLINE = offline
        os.environ.update({name: value for name, value in environment.items() if value is not None})
