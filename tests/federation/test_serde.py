"""Settings ↔ protobuf round trips, defaults for absent fields, and the rule that protos stay in serde.py."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from fedmedclip.federation import serde
from fedmedclip.federation.codec import CodecConfig
from fedmedclip.model.backbone import BackboneSpec
from fedmedclip.rpc.v1 import common_pb2 as pb
from fedmedclip.training.config import TrainConfig

PACKAGE_ROOT = Path(serde.__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "config",
    [
        CodecConfig(),
        CodecConfig(rho=1.0, quantization="fp32", compression="none"),
        CodecConfig(rho=0.05, quantization="fp16", compression="zlib"),
    ],
)
def test_codec_config_round_trip(config: CodecConfig) -> None:
    wire = serde.codec_config_to_proto(config).SerializeToString()
    assert serde.codec_config_from_proto(pb.CodecConfig.FromString(wire)) == config


@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(),
        TrainConfig(
            fam_lr=0.0,  # an explicit zero must survive: the fields carry presence
            head_lr=3e-4,
            lr_decay=1.0,
            betas=(0.8, 0.95),
            eps=1e-8,
            weight_decay=0.0,
            batch_size=7,
            local_epochs=3,
            kd_weight=0.5,
            kd_temperature=4.0,
            contrastive="prototype",
            use_contrastive=False,
            use_head_ce=False,
            use_kd=False,
            head_hidden=64,
        ),
    ],
)
def test_train_config_round_trip(config: TrainConfig) -> None:
    wire = serde.train_config_to_proto(config).SerializeToString()
    assert serde.train_config_from_proto(pb.TrainConfig.FromString(wire)) == config


def test_every_train_setting_is_mapped() -> None:
    assert {f.name for f in dataclasses.fields(TrainConfig)} == serde.TRAIN_FIELDS_COVERED


@pytest.mark.parametrize(
    "spec",
    [
        BackboneSpec(),
        BackboneSpec(model="fedmedclip-tiny", weights=None, preprocess="paper", seed=7),
        BackboneSpec(model="ViT-L-14", weights="/models/clip.safetensors"),
    ],
)
def test_backbone_spec_round_trip(spec: BackboneSpec) -> None:
    wire = serde.backbone_spec_to_proto(spec, weights_digest="ab" * 32).SerializeToString()
    assert serde.backbone_spec_from_proto(pb.BackboneSpec.FromString(wire)) == (spec, "ab" * 32)


def test_absent_fields_take_library_defaults() -> None:
    assert serde.codec_config_from_proto(pb.CodecConfig()) == CodecConfig()
    assert serde.train_config_from_proto(pb.TrainConfig()) == TrainConfig()
    assert serde.train_config_from_proto(pb.TrainConfig(adam_beta2=0.9)).betas == (0.9, 0.9)
    spec, digest = serde.backbone_spec_from_proto(pb.BackboneSpec(model="ViT-B-32"))
    assert spec == BackboneSpec(model="ViT-B-32", weights=None) and digest == ""


def test_unknown_enum_values_and_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown quantization value 9"):
        serde.codec_config_from_proto(pb.CodecConfig(quantization=9))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="codec rho"):
        serde.codec_config_from_proto(pb.CodecConfig(rho=0.0))
    with pytest.raises(ValueError, match="batch_size"):
        serde.train_config_from_proto(pb.TrainConfig(batch_size=1))
    with pytest.raises(ValueError, match="without a model name"):
        serde.backbone_spec_from_proto(pb.BackboneSpec())
    with pytest.raises(ValueError, match="seed"):
        serde.backbone_spec_to_proto(BackboneSpec(seed=-1))


# The only modules that may import protobuf code: serde, the generated code, and the gRPC transports (the
# aggregator's servicers, the Admin client, the agent's client, the container's health probe).
PROTOBUF_ALLOWED = {
    "fedmedclip/federation/serde.py",
    "aggregator_service/transport.py",
    "aggregator_service/admin_client.py",
    "hospital_agent/client.py",
    "deploy/docker/healthcheck.py",
}
REPO_ROOT = PACKAGE_ROOT.parent
CHECKED = ("fedmedclip", "aggregator_service", "hospital_agent", "inference_api", "bench", "scripts", "deploy")


def _imports_protobuf(name: str) -> bool:
    return (
        name == "fedmedclip.rpc"
        or name.startswith(("fedmedclip.rpc.", "google.protobuf"))
        or name.rsplit(".", 1)[-1].endswith(("_pb2", "_pb2_grpc"))
    )


def test_protobuf_types_do_not_leak_past_serde_and_the_transports() -> None:
    """docs/design.md §2: protobuf types stay in serde.py, the generated code and the gRPC transports."""
    offenders = []
    for top in CHECKED:
        for path in (REPO_ROOT / top).rglob("*.py"):
            relative = path.relative_to(REPO_ROOT).as_posix()
            if relative.startswith("fedmedclip/rpc/") or relative in PROTOBUF_ALLOWED:
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                if any(_imports_protobuf(name) for name in names):
                    offenders.append(relative)
    assert not offenders, f"modules importing protobuf code outside serde and the transports: {sorted(set(offenders))}"
