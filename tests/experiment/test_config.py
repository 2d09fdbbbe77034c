from __future__ import annotations

from pathlib import Path

import pytest

from fedmedclip.experiment.config import ALL_METHODS, ConfigError, load_config, parse_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "experiments"


@pytest.mark.parametrize("name", ["synth-quick.yaml", "isic2019.yaml"])
def test_example_configs_are_valid(name):
    config = load_config(CONFIGS / name)
    assert config.methods == list(ALL_METHODS)
    assert {a.name for a in config.ablations} >= {"no-aggregation", "dense-updates", "paper-preprocess"}


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    path = tmp_path / "sub" / "exp.yaml"
    path.parent.mkdir()
    path.write_text("name: x\ndata: {kind: isic2019, root: ../data}\nembedding: {cache_dir: cache}\n")
    config = load_config(path)
    assert config.data.root == path.parent.resolve() / "../data"  # type: ignore[union-attr]
    assert config.embedding.cache_dir == path.parent.resolve() / "cache"
    assert config.data.classes == ["MEL", "NV", "BCC", "AK", "BKL", "SCC"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "x", "data": {"kind": "synth"}, "federation": {"roundz": 3}}, "federation.roundz: Extra inputs"),
        ({"name": "x", "data": {"kind": "dicom"}}, "data: Input tag 'dicom'"),
        ({"name": "x", "data": {"kind": "synth"}, "federation": {"train": {"lr": 1}}}, "unknown training settings: lr"),
        ({"name": "x", "data": {"kind": "synth"}, "methods": ["fedprox"]}, "methods.0: Input should be"),
        ({"name": "x", "data": {"kind": "synth"}, "backbone": {"prompt_templates": ["a {}"]}}, "placeholder"),
        ({"name": "x", "data": {"kind": "synth"}, "split": {"fractions": [0.5, 0.5, 0.5]}}, "summing to 1"),
        ({"name": "x", "data": {"kind": "synth"}, "ablations": [{"name": "fedavg"}]}, "differ from method names"),
        (
            {
                "name": "x",
                "data": {"kind": "synth"},
                "ablations": [{"name": "a", "use_contrastive": False, "use_head_ce": False}],
            },
            "turns off both",
        ),
    ],
)
def test_invalid_configs_say_what_is_wrong(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(bad)
