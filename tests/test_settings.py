"""The one settings base: YAML with ${VAR} interpolation, env over file, unknown keys refused, no secret echoed."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from aggregator_service.settings import AggregatorSettings
from fedmedclip.settings import ConfigError, ServiceSettings
from hospital_agent.settings import AgentSettings
from inference_api.settings import ApiSettings

SECRET = "s3cr3t-Value-that-must-never-be-printed"


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FMC_TEST_")
    label: ClassVar[str] = "demo settings"

    name: str = "x"
    port: int = Field(default=1, ge=1, le=65535)
    password: SecretStr | None = None
    root: Path = Path("/srv")

    @field_validator("password")
    @classmethod
    def _long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().isdigit():
            raise ValueError("password must be digits only")
        return value


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return path


def test_every_service_shares_the_base() -> None:
    assert all(issubclass(cls, ServiceSettings) for cls in (AggregatorSettings, AgentSettings, ApiSettings))


def test_interpolation_env_over_file_and_flags_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FMC_TEST_HOME", "/data")
    monkeypatch.delenv("FMC_TEST_UNSET", raising=False)
    path = write(tmp_path, "name: ${FMC_TEST_UNSET:-fallback}\nroot: ${FMC_TEST_HOME}/$$x\nport: 80\n")
    settings = DemoSettings.load(path)
    assert (settings.name, settings.root, settings.port) == ("fallback", Path("/data/$x"), 80)
    monkeypatch.setenv("FMC_TEST_PORT", "81")
    assert DemoSettings.load(path).port == 81
    assert DemoSettings.load(path, port=82, name=None).port == 82  # None: the flag was not given


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nmae: typo\n", "nmae: Extra inputs are not permitted"),
        ("port: ${FMC_TEST_NOT_SET}\n", r"port uses \$\{FMC_TEST_NOT_SET\}, which is not set"),
        ("- a list\n", "must hold a mapping"),
        ("port: [unclosed\n", "not valid YAML at line 2"),
        ("port: 0\n", "port: Input should be greater than or equal to 1"),
    ],
)
def test_problems_are_one_config_error_naming_the_setting(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        DemoSettings.load(write(tmp_path, text))
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="does not exist"):
        DemoSettings.load(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "text",
    [
        f"password: {SECRET}\n",  # fails its validator
        f"password: [{SECRET}]\n",  # wrong type
        f"password: {SECRET}\nport: [{SECRET}\n",  # the YAML itself is broken on a line holding it
        f"passwrod: {SECRET}\n",  # a misspelt key
    ],
)
def test_a_bad_secret_is_never_echoed(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        DemoSettings.load(write(tmp_path, text))
    assert SECRET not in str(caught.value) and caught.value.__cause__ is None


def test_services_do_not_echo_their_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weak = "password" * 4  # long enough, but too few distinct characters
    with pytest.raises(ConfigError, match="admin_token is too weak") as caught:
        AggregatorSettings.load(write(tmp_path, f"insecure_loopback: true\nadmin_token: {weak}\n"))
    assert weak not in str(caught.value)
    monkeypatch.setenv("FEDMEDCLIP_AGENT_TOKEN", SECRET)
    agent = "site: a\naggregator: 127.0.0.1:1\ninsecure_loopback: true\ntoken_file: /t\ndata: {adapter: csv, root: /}\n"
    with pytest.raises(ConfigError, match="set token or token_file, not both") as caught:
        AgentSettings.load(write(tmp_path, agent))
    assert SECRET not in str(caught.value)
