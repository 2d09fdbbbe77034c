"""One settings class: FEDMEDCLIP_API_* env vars over an optional YAML file; insecure settings refused."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from inference_api.cli import app as cli
from inference_api.keys import KeyRing, generate_key, hash_key
from inference_api.settings import ApiKeyConfig, ConfigError, load_settings

DIGEST = hash_key("fmc_example")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("FEDMEDCLIP_API_"):
            monkeypatch.delenv(name)


def test_environment_gives_bundle_root_and_keys(monkeypatch, tmp_path):
    monkeypatch.setenv("FEDMEDCLIP_API_BUNDLE_ROOT", str(tmp_path))
    monkeypatch.setenv("FEDMEDCLIP_API_API_KEYS", json.dumps([{"name": "a", "sha256": DIGEST, "sites": ["site-a"]}]))
    monkeypatch.setenv("FEDMEDCLIP_API_MAX_IMAGES", "3")
    settings = load_settings()
    assert settings.bundle_root == tmp_path and settings.max_images == 3
    assert settings.api_keys[0].sha256 == DIGEST


def test_yaml_file_with_environment_overriding_it(monkeypatch, tmp_path):
    config = tmp_path / "api.yaml"
    config.write_text(
        f"bundle_root: {tmp_path}/from-yaml\nmodel: fedmedclip-tiny\nmax_images: 5\n"
        f"api_keys:\n  - name: clinic\n    sha256: 'sha256:{DIGEST.upper()}'\n    sites: [site-a, site-b]\n"
    )
    monkeypatch.setenv("FEDMEDCLIP_API_MAX_IMAGES", "7")
    settings = load_settings(config)
    assert settings.bundle_root == tmp_path / "from-yaml" and settings.model == "fedmedclip-tiny"
    assert settings.max_images == 7  # env beats the file
    assert settings.api_keys[0].sha256 == DIGEST and settings.api_keys[0].sites == ["site-a", "site-b"]
    assert load_settings(config, max_images=2).max_images == 2  # code beats env


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "no API keys configured"),
        ({"api_keys": [{"name": "a", "sha256": "plaintext-key", "sites": ["s"]}]}, "64 hex characters"),
        ({"api_keys": [{"name": "a", "sha256": DIGEST, "sites": ["../s"]}]}, "invalid site name"),
        ({"allow_unauthenticated": True, "unknown_option": 1}, "Extra inputs are not permitted"),
        ({"allow_unauthenticated": True, "tls_certfile": "cert.pem"}, "set both or neither"),
    ],
    ids=["no-keys", "plaintext-key", "bad-site", "typo", "half-tls"],
)
def test_insecure_or_mistyped_settings_are_refused(tmp_path, values, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(bundle_root=tmp_path, **values)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_key_ring_matches_only_the_hashed_key():
    key = generate_key()
    ring = KeyRing([ApiKeyConfig(name="x", sha256=hash_key(key), sites=["site-a"])])
    principal = ring.authenticate(key)
    assert principal is not None and principal.may_use("site-a") and not principal.may_use("site-b")
    assert ring.authenticate(key[:-1]) is None and ring.authenticate("") is None
    assert ring.authenticate("x" * 10_000) is None


def test_cli_hash_key_and_serve_refusals(tmp_path):
    runner = CliRunner()
    out = runner.invoke(cli, ["hash-key"]).output
    key = out.split("key:")[1].split()[0]
    assert f"sha256: {hash_key(key)}" in out
    assert runner.invoke(cli, ["hash-key", "--key", "abc"]).output.strip() == f"sha256: {hash_key('abc')}"

    refused = runner.invoke(cli, ["serve", "--port", "0"], env={"FEDMEDCLIP_API_BUNDLE_ROOT": str(tmp_path)})
    assert refused.exit_code == 1 and "no API keys configured" in refused.output
    open_to_all = runner.invoke(
        cli,
        ["serve", "--host", "0.0.0.0", "--port", "0"],
        env={"FEDMEDCLIP_API_BUNDLE_ROOT": str(tmp_path), "FEDMEDCLIP_API_ALLOW_UNAUTHENTICATED": "true"},
    )
    assert open_to_all.exit_code == 1 and "non-loopback" in open_to_all.output
    keys = json.dumps([{"name": "a", "sha256": DIGEST, "sites": ["*"]}])
    plaintext = runner.invoke(
        cli,
        ["serve", "--host", "192.0.2.1", "--port", "0"],
        env={"FEDMEDCLIP_API_BUNDLE_ROOT": str(tmp_path), "FEDMEDCLIP_API_API_KEYS": keys},
    )
    assert plaintext.exit_code == 1 and "refusing plain HTTP" in plaintext.output
