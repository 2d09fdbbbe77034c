"""Settings: env prefix, YAML file, flag precedence, and refusal of insecure combinations."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from aggregator_service.settings import AggregatorSettings, ConfigError, is_loopback
from tests.aggregator.helpers import ADMIN_TOKEN


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("FEDMEDCLIP_AGGREGATOR_"):
            monkeypatch.delenv(key)


def test_plaintext_needs_the_flag_and_a_loopback_host() -> None:
    with pytest.raises(ValidationError, match="no TLS configured"):
        AggregatorSettings()
    assert AggregatorSettings(insecure_loopback=True).host == "127.0.0.1"
    for host in ("0.0.0.0", "10.1.2.3", "aggregator.example.org"):
        with pytest.raises(ValidationError, match="only allowed with a loopback host"):
            AggregatorSettings(insecure_loopback=True, host=host)
    assert AggregatorSettings(insecure_loopback=True, host="::1").host == "::1"
    assert [is_loopback(h) for h in ("localhost", "127.0.0.5", "[::1]", "::ffff:10.0.0.1")] == [True, True, True, False]


def test_tls_settings_must_be_complete(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    with pytest.raises(ValidationError, match="must be set together"):
        AggregatorSettings(tls_cert_file=cert)
    with pytest.raises(ValidationError, match="needs tls_cert_file"):
        AggregatorSettings(insecure_loopback=True, tls_client_ca_file=cert)
    settings = AggregatorSettings(host="0.0.0.0", tls_cert_file=cert, tls_key_file=key)
    assert settings.uses_tls


def test_weak_admin_tokens_are_refused() -> None:
    for weak in ("changeme", "short", "a" * 40, "password"):
        with pytest.raises(ValidationError, match="too weak"):
            AggregatorSettings(insecure_loopback=True, admin_token=SecretStr(weak))
    settings = AggregatorSettings(insecure_loopback=True)
    with pytest.raises(ConfigError, match="FEDMEDCLIP_AGGREGATOR_ADMIN_TOKEN"):
        settings.require_admin_token()
    assert (
        AggregatorSettings(insecure_loopback=True, admin_token=SecretStr(ADMIN_TOKEN)).require_admin_token()
        == ADMIN_TOKEN
    )
    assert ADMIN_TOKEN not in repr(AggregatorSettings(insecure_loopback=True, admin_token=SecretStr(ADMIN_TOKEN)))


def test_precedence_flags_over_env_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "aggregator.yaml"
    config.write_text("insecure_loopback: true\nport: 7000\nmetrics_port: 7001\nlog_format: json\n")
    from_file = AggregatorSettings.load(config)
    assert (from_file.port, from_file.metrics_port, from_file.log_format) == (7000, 7001, "json")
    monkeypatch.setenv("FEDMEDCLIP_AGGREGATOR_PORT", "7100")
    monkeypatch.setenv("FEDMEDCLIP_AGGREGATOR_DATABASE_URL", "postgresql+psycopg://u@db/agg")
    from_env = AggregatorSettings.load(config)
    assert (from_env.port, from_env.database_url) == (7100, "postgresql+psycopg://u@db/agg")
    assert AggregatorSettings.load(config, port=0, host=None).port == 0
    config.write_text("insecure_loopback: true\nno_such_setting: 1\n")
    with pytest.raises(ConfigError, match="no_such_setting: Extra inputs are not permitted"):
        AggregatorSettings.load(config)
    with pytest.raises(ConfigError, match="does not exist"):
        AggregatorSettings.load(tmp_path / "missing.yaml")


def test_client_target_and_chunk_limits() -> None:
    assert AggregatorSettings(insecure_loopback=True, port=6000).client_target() == "127.0.0.1:6000"
    with pytest.raises(ConfigError, match="--server"):
        AggregatorSettings(insecure_loopback=True, port=0).client_target()
    with pytest.raises(ValidationError, match="chunk_bytes"):
        AggregatorSettings(insecure_loopback=True, chunk_bytes=4 << 20)
