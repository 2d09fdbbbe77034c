"""The run configuration the aggregator hands to sites: validation, JSON form, and the protobuf round trip."""

from __future__ import annotations

import dataclasses

import pytest

from fedmedclip.federation.codec import CodecConfig
from fedmedclip.federation.run_config import BackboneRef, RunConfig, run_config_from_yaml
from fedmedclip.federation.serde import run_config_from_proto, run_config_to_proto
from fedmedclip.rpc.v1 import common_pb2
from fedmedclip.training.config import TrainConfig


def full_config() -> RunConfig:
    return RunConfig(
        embed_dim=512,
        rounds=50,
        min_sites=3,
        round_timeout_s=90.5,
        late_policy="reopen",
        weighting="uniform",
        norm_bound=4.0,
        fam_seed=7,
        backbone=BackboneRef("ViT-B-16", "laion2b_s34b_b88k", "ab" * 32, "paper", 3),
        train=TrainConfig(fam_lr=1e-4, batch_size=64, contrastive="prototype"),
        codec=CodecConfig(rho=0.3, quantization="fp16", compression="zlib"),
        prompt_templates=("a photo of a {class}", "a dermoscopy image of {class}"),
    )


def test_proto_and_json_round_trips() -> None:
    config = full_config()
    assert run_config_from_proto(run_config_to_proto(config)) == config
    assert RunConfig.from_dict(config.to_dict()) == config
    plain = RunConfig(embed_dim=64)
    assert run_config_from_proto(run_config_to_proto(plain)) == plain  # norm_bound None, weights "openai"
    random_init = dataclasses.replace(plain, backbone=BackboneRef(weights=None))
    assert run_config_from_proto(run_config_to_proto(random_init)).backbone.weights is None


def test_unset_fields_take_library_defaults() -> None:
    message = common_pb2.RunConfig(embed_dim=32, rounds=2, min_sites=1)
    config = run_config_from_proto(message)
    assert (config.late_policy, config.weighting, config.norm_bound) == ("accept_until_quorum", "samples", None)
    assert config.codec == CodecConfig() and config.train == TrainConfig() and config.round_timeout_s == 600.0


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"embed_dim": 0}, "embed_dim"),
        ({"rounds": 0}, "rounds"),
        ({"min_sites": 0}, "min_sites"),
        ({"round_timeout_s": float("inf")}, "round_timeout_s"),
        ({"late_policy": "maybe"}, "late_policy"),
        ({"weighting": "votes"}, "weighting"),
        ({"norm_bound": -1.0}, "norm_bound"),
        ({"prompt_templates": ("no placeholder",)}, "placeholder"),
    ],
)
def test_invalid_values_are_named(changes: dict[str, object], needle: str) -> None:
    values = {"embed_dim": 8, **changes}
    with pytest.raises(ValueError, match=needle):
        RunConfig(**values)  # type: ignore[arg-type]


def test_from_dict_refuses_unknown_and_missing_keys() -> None:
    with pytest.raises(ValueError, match="unknown run settings: colour"):
        RunConfig.from_dict({"embed_dim": 8, "colour": "blue"})
    with pytest.raises(ValueError, match="needs embed_dim"):
        RunConfig.from_dict({"rounds": 3})
    with pytest.raises(ValueError, match="unknown backbone settings"):
        RunConfig.from_dict({"embed_dim": 8, "backbone": {"model": "x", "size": 1}})
    with pytest.raises(ValueError, match="unknown late policy value 9"):
        run_config_from_proto(common_pb2.RunConfig(embed_dim=8, rounds=1, min_sites=1, late_policy=9))  # type: ignore[arg-type]


def test_one_path_from_yaml_text_to_the_wire() -> None:
    """YAML text -> RunConfig (command-line values on top) -> proto -> the same RunConfig."""
    text = "embed_dim: 32\nrounds: 4\nbackbone: {model: ViT-B-16}\ntrain: {batch_size: 16}\n"
    config = run_config_from_yaml(text, {"rounds": 7, "min_sites": None}, {"weights": None}, source="run.yaml")
    assert (config.embed_dim, config.rounds, config.min_sites) == (32, 7, 1)
    assert (config.backbone.model, config.backbone.weights, config.train.batch_size) == ("ViT-B-16", None, 16)
    assert run_config_from_proto(run_config_to_proto(config)) == config
    assert run_config_from_yaml("", {"embed_dim": 8}) == RunConfig(embed_dim=8)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "run.yaml must be a mapping"),
        ("embed_dim: [", "cannot read run.yaml"),
        ("rounds: 3\n", "needs embed_dim"),
        ("embed_dim: 8\nround: 3\n", "unknown run settings: round"),
        ("embed_dim: 8\nbackbone: vit\n", "backbone must be a mapping"),
    ],
)
def test_bad_run_files_are_refused_by_name(text: str, message: str) -> None:
    backbone = {"model": "RN50"} if "backbone" in text else None
    with pytest.raises(ValueError, match=message):
        run_config_from_yaml(text, backbone_overrides=backbone, source="run.yaml")


def test_secure_aggregation_flows_from_yaml_to_the_wire_and_refuses_nonsense() -> None:
    text = """
embed_dim: 64
min_sites: 3
secure_aggregation: {enabled: true, threshold: 3, degree: all, clip_norm: 2.5, weight_cap: 8, row_fraction: 0.5}
"""
    config = run_config_from_yaml(text)
    secure = config.secure_aggregation
    assert (secure.enabled, secure.threshold, secure.degree, secure.weight_cap) == (True, 3, "all", 8)
    assert run_config_from_proto(run_config_to_proto(config)) == config
    assert RunConfig.from_dict(config.to_dict()) == config
    assert not RunConfig(embed_dim=8).secure_aggregation.enabled  # off by default
    assert not run_config_to_proto(RunConfig(embed_dim=8)).HasField("secure_aggregation")
    with pytest.raises(ValueError, match="unknown secure_aggregation settings: bits"):
        run_config_from_yaml("embed_dim: 8\nsecure_aggregation: {enabled: true, bits: 20}")
    with pytest.raises(ValueError, match="degree must be"):
        run_config_from_yaml("embed_dim: 8\nsecure_aggregation: {degree: many}")
