"""One way to load a service's settings (docs/design.md §9): the base class of the aggregator's, the agent's
and the inference API's settings.

Precedence, highest first: values passed in code (command-line flags; ``None`` means "not given"),
environment variables (each service's prefix; nested keys with ``__`` where the service allows it), the
YAML file, the defaults. The YAML file may reference the environment as ``${NAME}`` or ``${NAME:-default}``
(``$$`` is a literal ``$``), so that a token can stay out of the file: ``token: ${FEDMEDCLIP_AGENT_TOKEN}``.
Unknown keys are refused: a misspelt key must not silently fall back to its default.

Every problem surfaces as one ``ConfigError`` whose message names the setting and never repeats the value
given: pydantic's own text echoes inputs, and an input may be a token or a password in a database URL.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Self

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# The YAML file of the settings being built. pydantic-settings picks sources in a classmethod, which has
# no other way to receive a per-call path; a context variable keeps concurrent loads (tests) apart.
_yaml_file: ContextVar[Path | None] = ContextVar("fedmedclip_settings_yaml_file", default=None)


class ConfigError(ValueError):
    """The settings cannot work; the message names the file or setting to fix (never a secret value)."""


class ServiceSettings(BaseSettings):
    """Base of every service's settings: subclasses set ``env_prefix`` and name themselves in ``label``."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)
    label: ClassVar[str] = "settings"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _yaml_file.get()
        if path is not None:
            sources.append(_InterpolatedYaml(settings_cls, read_config_file(path)))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Self:
        """Settings from ``overrides`` (``None`` values ignored), the environment, ``config_file`` and the
        defaults; ``ConfigError`` lists every problem by setting name."""
        given = {key: value for key, value in overrides.items() if value is not None}
        path = Path(config_file) if config_file is not None else None
        if path is not None and not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        token = _yaml_file.set(path)
        try:
            return cls(**given)
        except ValidationError as error:
            where = f" in {path}" if path is not None else ""
            raise ConfigError(f"invalid {cls.label}{where}: {describe(error)}") from None
        finally:
            _yaml_file.reset(token)


def describe(error: ValidationError) -> str:
    """Each problem as ``location: message``, on one line, without the input values."""
    return "; ".join(
        f"{'.'.join(str(part) for part in item['loc']) or 'settings'}: {item['msg'].removeprefix('Value error, ')}"
        for item in error.errors(include_input=False, include_url=False, include_context=False)
    )


class _InterpolatedYaml(PydanticBaseSettingsSource):
    """The YAML file's mapping, already interpolated."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse the YAML file and interpolate ``${NAME}``; ``ConfigError`` names the file and the problem."""
    try:
        with path.open(encoding="utf-8") as stream:
            # From a stream, PyYAML's error marks carry no snippet of the line: it could hold a secret.
            loaded = yaml.safe_load(stream)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or "cannot be parsed"
        raise ConfigError(f"config file {path} is not valid YAML{where}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings, not a {type(loaded).__name__}")
    result = _interpolate(loaded, path, "")
    assert isinstance(result, dict)
    return result


def _interpolate(value: Any, path: Path, where: str) -> Any:
    if isinstance(value, dict):
        return {key: _interpolate(item, path, f"{where}.{key}" if where else str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, path, f"{where}[{index}]") for index, item in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found is None or (found == "" and default is not None):
            if default is None:
                raise ConfigError(f"config file {path}: {where} uses ${{{name}}}, which is not set in the environment")
            return default
        return found

    return _INTERPOLATION.sub(substitute, value)
