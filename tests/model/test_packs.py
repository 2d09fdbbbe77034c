"""Backbone packs: a downloaded model folder becomes a checked, offline pack that loads with no network call."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fedmedclip.cli import app
from fedmedclip.model import packing, packs
from fedmedclip.model.backbone import TINY_MODEL, Backbone, BackboneSpec, WeightsUnavailableError, load_backbone
from tests.model.snapshots import known, network_blocked, shrunk_biomedclip, write_snapshot

pytest.importorskip("transformers")  # the hf-text extra; part of the test extra

TINY_CONFIG = Path(__file__).resolve().parents[2] / "fedmedclip" / "model" / "configs" / f"{TINY_MODEL}.json"
PROMPT = "a dermoscopy picture of a melanoma"


def lesion() -> Image.Image:
    image = Image.new("RGB", (300, 220), (190, 120, 95))
    image.paste((70, 40, 30), (120, 80, 190, 150))
    return image


def tiny_config() -> dict[str, Any]:
    return {"model_cfg": json.loads(TINY_CONFIG.read_text()), "preprocess_cfg": {}}


def load_offline(pack: Path, model: str) -> tuple[Backbone, torch.Tensor, torch.Tensor, list[str]]:
    """Load the pack through the agent's and API's path and embed an image and a prompt, sockets refused."""
    with network_blocked() as attempts:
        backbone = load_backbone(BackboneSpec(model, str(pack)), device="cpu")
        image = backbone.encode_pil([lesion()])
        text = backbone.encode_texts([PROMPT])
        backbone.class_prototypes(["melanoma", "nevus"])
    return backbone, image, text, attempts


def assert_same_as_source(backbone: Backbone, source: Any, image: torch.Tensor, text: torch.Tensor) -> None:
    """The pack computes what the downloaded weights compute: the weights, tokenizer and preprocessing came along."""
    with torch.inference_mode():
        expected_image = source.encode_image(backbone.preprocess(lesion()).unsqueeze(0))
        expected_text = torch.nn.functional.normalize(source.encode_text(backbone.tokenizer([PROMPT])), dim=-1)
    assert torch.allclose(image, expected_image, atol=1e-5)
    assert torch.allclose(text, expected_text, atol=1e-5)
    assert backbone.logit_scale == pytest.approx(float(source.logit_scale.detach().exp()))


@pytest.fixture(scope="module")
def tiny_pack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny")
    source = write_snapshot(tiny_config(), root / "snapshot", seed=3)
    packing.pack(root / "snapshot", root / "pack", model_name=TINY_MODEL)
    return root / "pack", source


@pytest.fixture(scope="module")
def biomed_pack(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("biomed")
    config = shrunk_biomedclip()
    source = write_snapshot(config, root / "snapshot", seed=1)
    (root / "shrunk.json").write_text(json.dumps(config))
    packing.pack(root / "snapshot", root / "pack", config=root / "shrunk.json")
    return root / "pack", source


def test_open_clip_snapshot_packs_and_loads_offline(tiny_pack: tuple[Path, Any]) -> None:
    pack, source = tiny_pack
    manifest = packs.verify(pack)
    assert manifest.model == TINY_MODEL and manifest.text_tower == "open_clip"
    assert sorted(manifest.files) == [packs.CONFIG, packs.WEIGHTS, f"tokenizer/{packs.BPE_VOCAB}"]
    backbone, image, text, attempts = load_offline(pack, TINY_MODEL)
    assert attempts == []
    assert backbone.weights_digest == manifest.digest
    assert image.shape == (1, 64) and text.shape == (1, 64)
    assert_same_as_source(backbone, source, image, text)


def test_bert_text_tower_packs_without_its_config_and_loads_offline(biomed_pack: tuple[Path, Any]) -> None:
    pack, source = biomed_pack
    manifest = packs.verify(pack)
    assert manifest.text_tower == "hf" and manifest.model == "biomedclip-shrunk"
    # The snapshot had no BERT config.json: the pack carries the one from the shipped config family.
    assert json.loads((pack / "text" / "config.json").read_text())["model_type"] == "bert"
    assert {"text/vocab.txt", "text/tokenizer_config.json"} <= set(manifest.files)
    stored = json.loads((pack / packs.CONFIG).read_text())["model_cfg"]["text_cfg"]
    assert stored["hf_model_name"] == "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"  # provenance kept
    backbone, image, text, attempts = load_offline(pack, "biomedclip-shrunk")
    assert attempts == []
    assert image.shape == (1, 512) and backbone.embed_dim == 512
    assert backbone.tokenizer([PROMPT]).shape == (1, 256)
    assert_same_as_source(backbone, source, image, text)


def test_packing_is_reproducible(tmp_path: Path, tiny_pack: tuple[Path, Any]) -> None:
    pack, _ = tiny_pack
    snapshot = pack.parent / "snapshot"
    again = packing.pack(snapshot, tmp_path / "again", model_name=TINY_MODEL)
    assert again.digest == packs.verify(pack).digest
    other = write_snapshot(tiny_config(), tmp_path / "other-snapshot", seed=4)
    assert other is not None
    assert packing.pack(tmp_path / "other-snapshot", tmp_path / "other", model_name=TINY_MODEL).digest != again.digest


def copy_pack(pack: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(pack, target)
    return target


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_verify_reports_each_problem_in_one_line(tmp_path: Path, biomed_pack: tuple[Path, Any]) -> None:
    pack, _ = biomed_pack
    ok = cli("backbone", "verify", str(pack))
    assert ok.exit_code == 0 and f"digest {packs.verify(pack).digest}" in ok.stdout

    missing = copy_pack(pack, tmp_path / "missing")
    (missing / "text" / "vocab.txt").unlink()
    tampered = copy_pack(pack, tmp_path / "tampered")
    with (tampered / "text" / "vocab.txt").open("a") as handle:
        handle.write("carcinoma\n")
    extra = copy_pack(pack, tmp_path / "extra")
    (extra / "text" / "added_tokens.json").write_text("{}")
    foreign = copy_pack(pack, tmp_path / "foreign")
    manifest = json.loads((foreign / packs.MANIFEST).read_text())
    (foreign / packs.MANIFEST).write_text(json.dumps({**manifest, "format": "something-else"}))
    relabelled = copy_pack(pack, tmp_path / "relabelled")
    (relabelled / packs.MANIFEST).write_text(json.dumps({**manifest, "digest": "0" * 64}))
    cases = {
        missing: "vocab.txt: missing file",
        tampered: "vocab.txt: digest mismatch",
        extra: "added_tokens.json: file not listed in the manifest",
        foreign: "unknown format 'something-else'",
        relabelled: "pack digest mismatch",
        tmp_path / "snapshot-not-a-pack": "not a backbone pack",
    }
    (tmp_path / "snapshot-not-a-pack").mkdir()
    for folder, message in cases.items():
        result = cli("backbone", "verify", str(folder))
        assert result.exit_code == 1, folder
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    with pytest.raises(WeightsUnavailableError, match=r"vocab\.txt: digest mismatch"):
        load_backbone(BackboneSpec("biomedclip-shrunk", str(tampered)), device="cpu")


def test_the_spec_must_name_the_pack_model(tiny_pack: tuple[Path, Any]) -> None:
    pack, _ = tiny_pack
    with pytest.raises(WeightsUnavailableError, match=r"holds model 'fedmedclip-tiny'.*set model: fedmedclip-tiny"):
        load_backbone(BackboneSpec("ViT-B-32", str(pack)), device="cpu")


class _Payload:
    """A pickle that would create a file when unpickled: packing must never run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_pack_refuses_bad_sources_clearly(tmp_path: Path, tiny_pack: tuple[Path, Any]) -> None:
    snapshot = tiny_pack[0].parent / "snapshot"
    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    (hostile / packs.CONFIG).write_text(json.dumps(tiny_config()))
    with (hostile / "open_clip_pytorch_model.bin").open("wb") as handle:
        pickle.dump({"visual.proj": _Payload(marker)}, handle, protocol=2)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / packs.CONFIG).write_text(json.dumps(tiny_config()))
    (garbage / "open_clip_pytorch_model.bin").write_bytes(b"not a checkpoint at all")
    other_arch = tmp_path / "other-arch"
    other_arch.mkdir()
    (other_arch / packs.CONFIG).write_text(json.dumps(known("openai-vit-b-32")))
    (other_arch / "open_clip_pytorch_model.bin").write_bytes((snapshot / "open_clip_pytorch_model.bin").read_bytes())
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "open_clip_pytorch_model.bin").write_bytes(b"x")

    cases = [
        (["backbone", "pack", str(hostile), str(tmp_path / "p1"), "--model", "t"], "unknown checkpoint format"),
        (["backbone", "pack", str(garbage), str(tmp_path / "p2"), "--model", "t"], "unknown checkpoint format"),
        (["backbone", "pack", str(other_arch), str(tmp_path / "p3")], "do not fit the config"),
        (["backbone", "pack", str(bare), str(tmp_path / "p4")], "no open_clip_config.json; pass --config"),
        (["backbone", "pack", str(snapshot), str(tmp_path / "p5")], "name the model with --model"),
        (["backbone", "pack", str(snapshot), str(tiny_pack[0]), "--model", "t"], "already exists"),
        (["backbone", "pack", str(snapshot), str(tmp_path / "p6"), "--config", "openai-vit-b-16"], "another arch"),
        (["backbone", "pack", str(tmp_path / "nowhere"), str(tmp_path / "p7")], "does not exist"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not marker.exists()  # weights_only=True: the pickle's code never ran
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left behind


def test_pack_command_prints_the_digest_to_pin(tmp_path: Path, tiny_pack: tuple[Path, Any]) -> None:
    snapshot = tiny_pack[0].parent / "snapshot"
    result = cli("backbone", "pack", str(snapshot), str(tmp_path / "pack"), "--model", TINY_MODEL)
    assert result.exit_code == 0, result.output
    assert f"digest {packs.verify(tmp_path / 'pack').digest}" in result.stdout
    # One checkpoint file with a plain open_clip model config beside nothing else: the other source form.
    from safetensors.torch import save_file

    state = {key: value.contiguous() for key, value in tiny_pack[1].state_dict().items()}
    save_file(state, str(tmp_path / "tiny.safetensors"))
    args = ["--config", str(TINY_CONFIG), "--model", TINY_MODEL]
    from_file = cli("backbone", "pack", str(tmp_path / "tiny.safetensors"), str(tmp_path / "from-file"), *args)
    assert from_file.exit_code == 0, from_file.output
    assert packs.verify(tmp_path / "from-file").digest == packs.verify(tmp_path / "pack").digest
    listing = cli("backbone", "configs")
    for name in ("openai-vit-b-32", "openai-vit-b-16", "biomedclip-vit-b-16-pubmedbert-256", "dermlip-vit-b-16"):
        assert name in listing.stdout


FULL_SIZE = [
    ("openai-vit-b-32", "ViT-B-32", 512),
    ("openai-vit-b-16", "ViT-B-16", 512),
    ("dermlip-vit-b-16", "DermLIP_ViT-B-16", 512),
    ("biomedclip-vit-b-16-pubmedbert-256", "BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", 512),
]


@pytest.mark.heavy
@pytest.mark.parametrize(("config", "model", "dim"), FULL_SIZE, ids=[row[0] for row in FULL_SIZE])
def test_shipped_config_at_full_size_packs_and_embeds_offline(
    tmp_path: Path, config: str, model: str, dim: int
) -> None:
    """The real architecture of each shipped config, random weights, through `backbone pack` and load_backbone."""
    source = write_snapshot(known(config), tmp_path / "snapshot")
    result = cli("backbone", "pack", str(tmp_path / "snapshot"), str(tmp_path / "pack"), "--config", config)
    assert result.exit_code == 0, result.output
    del result
    backbone, image, text, attempts = load_offline(tmp_path / "pack", model)
    assert attempts == []
    assert image.shape == (1, dim) and text.shape == (1, dim) and backbone.image_size == 224
    assert_same_as_source(backbone, source, image, text)


def test_the_socket_guard_catches_a_hub_request() -> None:
    """The guard the offline tests rely on sees the hub client's connections (it goes through Python sockets)."""
    import huggingface_hub

    url = "https://huggingface.co/api/models/microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    with network_blocked() as attempts, pytest.raises(Exception):  # noqa: B017 - any failure will do
        huggingface_hub.get_session().head(url, timeout=5)
    assert attempts, "the hub request never reached a socket: the offline tests would prove nothing"
