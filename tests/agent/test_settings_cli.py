"""Settings (YAML + ${ENV} + env vars, validators) and the CLI's clear errors, ``embed`` and ``status``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from hospital_agent.cli import EXIT_CONFIG, app
from hospital_agent.settings import ConfigError, load_settings

runner = CliRunner()
BASE = {
    "site": "site-a",
    "aggregator": "127.0.0.1:50051",
    "insecure_loopback": True,
    "data": {"adapter": "imagefolder", "root": "/data/site-a"},
}


def config_file(tmp_path: Path, text: str | dict[str, object]) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text if isinstance(text, str) else yaml.safe_dump(text))
    return path


def test_yaml_interpolation_and_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SITE_TOKEN", "tok-123")
    monkeypatch.setenv("FEDMEDCLIP_AGENT_DATA__SPLIT_SEED", "7")  # env beats the file, nested with "__"
    path = config_file(
        tmp_path,
        "site: site-a\naggregator: 127.0.0.1:50051\ninsecure_loopback: true\ntoken: ${SITE_TOKEN}\n"
        "state_dir: ${STATE_ROOT:-/srv/agent}/state\nbundle_root: /b/$$literal\n"
        "data:\n  adapter: ImageFolder\n  root: /data/site-a\n  split_seed: 1\n",
    )
    settings = load_settings(path)
    assert settings.require_token() == "tok-123"
    assert settings.state_dir == Path("/srv/agent/state") and settings.bundle_root == Path("/b/$literal")
    assert (settings.data.adapter, settings.data.split_seed) == ("imagefolder", 7)
    assert settings.effective_cache_dir == Path("/srv/agent/state/cache")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"adapter": "nifti", "root": "/x"}}, "unknown data adapter 'nifti'; known adapters: imagefolder"),
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
        ({"aggregator": "10.1.2.3:50051"}, "insecure_loopback is only allowed towards a loopback aggregator"),
        ({"aggregator": "no-port"}, "aggregator must be HOST:PORT"),
        ({"insecure_loopback": False, "tls": {"cert_file": "/c.pem"}}, "cert_file and tls.key_file must be set"),
        ({"token": "a", "token_file": "/run/token"}, "set token or token_file, not both"),
        ({"data": {"adapter": "isic2019", "root": "/x"}}, "needs data.anatomical_site"),
        ({"site": "../etc"}, "site must be 1-64 letters"),
        ({"device": "tpu"}, "device must be auto, cpu, cuda"),
    ],
)
def test_bad_settings_are_refused_clearly(tmp_path: Path, change: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings(config_file(tmp_path, {**BASE, **change}))


def test_missing_env_reference_and_token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDMEDCLIP_AGENT_TOKEN", raising=False)
    path = config_file(tmp_path, {**BASE, "token": "${FEDMEDCLIP_AGENT_TOKEN}"})
    with pytest.raises(ConfigError, match=r"token uses \$\{FEDMEDCLIP_AGENT_TOKEN\}, which is not set"):
        load_settings(path)
    monkeypatch.setenv("FEDMEDCLIP_AGENT_TOKEN", "from-env")
    assert load_settings(path).require_token() == "from-env"
    monkeypatch.delenv("FEDMEDCLIP_AGENT_TOKEN")  # else token (from the env) and token_file would both be set
    (tmp_path / "token").write_text("from-file\n")
    assert load_settings(config_file(tmp_path, {**BASE, "token_file": str(tmp_path / "token")})).require_token() == (
        "from-file"
    )
    with pytest.raises(ConfigError, match="no site token"):
        load_settings(config_file(tmp_path, BASE)).require_token()


def test_run_refuses_missing_root_and_unknown_adapter(tmp_path: Path) -> None:
    missing = config_file(tmp_path, {**BASE, "token": "t", "data": {"adapter": "imagefolder", "root": "/nope"}})
    result = runner.invoke(app, ["run", "--config", str(missing)])
    assert result.exit_code == EXIT_CONFIG
    assert "data.root /nope does not exist (adapter imagefolder)" in result.output

    unknown = config_file(tmp_path, {**BASE, "token": "t", "data": {"adapter": "nifti", "root": "/x"}})
    result = runner.invoke(app, ["run", "--config", str(unknown)])
    assert result.exit_code == EXIT_CONFIG and "unknown data adapter 'nifti'" in result.output
    assert "Traceback" not in result.output


def test_embed_fills_the_cache_and_status_reports(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for index in range(4):
            pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{index}.png")
    (tmp_path / "data" / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    path = config_file(
        tmp_path,
        {
            **BASE,
            "data": {"adapter": "imagefolder", "root": str(tmp_path / "data")},
            "backbone": {"model": "fedmedclip-tiny", "weights": "random"},
            "state_dir": str(tmp_path / "state"),
            "bundle_root": str(tmp_path / "bundles"),
            "device": "cpu",
            "embed_workers": 0,
        },
    )
    first = runner.invoke(app, ["embed", "--config", str(path)])
    assert first.exit_code == 0, first.output
    assert "8 images embedded" in first.output and "8 computed" in first.output and "1 unreadable" in first.output
    failed = json.loads((tmp_path / "state" / "embed-skipped.json").read_text())
    assert [Path(item["path"]).name for item in failed] == ["broken.png"]
    second = runner.invoke(app, ["embed", "--config", str(path)])
    assert "0 computed, 8 from the cache" in second.output

    status = runner.invoke(app, ["status", "--config", str(path), "--json"])
    assert status.exit_code == 0, status.output
    info = json.loads(status.output)
    assert info["site"] == "site-a" and info["run"] is None and info["fam_version"] == 0
    assert info["cache_bytes"] > 0 and info["bundle"] is None


def test_deploy_files_are_valid() -> None:
    deploy = Path(__file__).resolve().parents[2] / "deploy"
    example = load_settings(deploy / "agent.example.yaml")
    assert (example.site, example.data.adapter, example.insecure_loopback) == ("site-a", "imagefolder", False)
    unit = (deploy / "systemd" / "fedmedclip-agent.service").read_text()
    directives = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith(("#", " "))
    )
    assert directives["ExecStart"].endswith("fedmedclip agent run --config /etc/fedmedclip/agent.yaml")
    assert directives["User"] == "fedmedclip" and directives["Restart"] == "on-failure"
    assert directives["RestartPreventExitStatus"] == str(EXIT_CONFIG)
    assert directives["NoNewPrivileges"] == "yes" and directives["ProtectSystem"] == "strict"
