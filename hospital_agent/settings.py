"""The agent's settings: one pydantic-settings class, env prefix ``FEDMEDCLIP_AGENT_``, an optional YAML file.

Loading comes from ``fedmedclip.settings.ServiceSettings``: explicit overrides (CLI flags) over environment
variables (nested keys with ``__``: ``FEDMEDCLIP_AGENT_DATA__ROOT``) over the YAML file over defaults; the file
may say ``token: ${FEDMEDCLIP_AGENT_TOKEN}`` to keep the token out of it; unknown keys are errors.

Validators refuse what would be unsafe or cannot work: plaintext gRPC except to a loopback aggregator with
``insecure_loopback``, a client certificate without its key, both ``token`` and ``token_file``, an unknown
data adapter. Messages name the setting to fix and never echo secret values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from fedmedclip.netaddr import is_loopback
from fedmedclip.settings import ConfigError, ServiceSettings

__all__ = ["ADAPTERS", "CONFIG_ENV", "ENV_PREFIX", "AgentSettings", "ConfigError", "load_settings", "split_target"]

ENV_PREFIX = "FEDMEDCLIP_AGENT_"
CONFIG_ENV = "FEDMEDCLIP_AGENT_CONFIG"
# Kept here, not imported from ``adapters``, so that loading settings stays free of torch and PIL.
ADAPTERS: tuple[str, ...] = ("imagefolder", "csv", "isic2019", "dicom")
# Site names become bundle folders and URL segments (``fedmedclip.bundle.check_name`` has the same rule).
_SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def split_target(target: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); ``ValueError`` with the expected form otherwise."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\s:/\[\]]+):(\d{1,5})", target.strip())
    if not match:
        raise ValueError(f"aggregator must be HOST:PORT (e.g. aggregator.example.org:50051), got {target!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise ValueError(f"aggregator port must be 1..65535, got {port}")
    return host, port


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSettings(_Section):
    """Where the site's labelled images are and how to read them."""

    adapter: str = Field(description="imagefolder | csv | isic2019 | dicom")
    root: Path = Field(description="Dataset folder (imagefolder, dicom: class sub-folders; isic2019: the CSVs).")
    classes: list[str] | None = Field(
        default=None,
        description="Label space and order; default: derived (folders, CSV labels). isic2019: ISIC codes.",
    )
    split_seed: int = Field(default=0, ge=0, description="Seed of the stratified 60/20/20 train/val/test split.")
    manifest: Path | None = Field(default=None, description="csv: the manifest file (default <root>/manifest.csv).")
    path_column: str = Field(default="path", description="csv: column holding image paths.")
    label_column: str = Field(default="label", description="csv: column holding class labels.")
    anatomical_site: str | None = Field(
        default=None, description="isic2019: this hospital's anatom_site_general value, e.g. 'head/neck'."
    )

    @field_validator("adapter", mode="before")
    @classmethod
    def _known_adapter(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ADAPTERS:
            return value.strip().lower()
        raise ValueError(f"unknown data adapter {value!r}; known adapters: {', '.join(ADAPTERS)}")

    @model_validator(mode="after")
    def _adapter_needs(self) -> DataSettings:
        if self.adapter == "isic2019" and not (self.anatomical_site or "").strip():
            raise ValueError(
                "the isic2019 adapter needs data.anatomical_site (which anatom_site_general this hospital is, "
                "e.g. 'head/neck', 'lower extremity', or 'unknown' for rows without one)"
            )
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError(f"data.classes repeats a class: {self.classes}")
        return self


class TlsSettings(_Section):
    """TLS towards the aggregator. Without ``ca_file`` the system's trusted roots verify the server."""

    ca_file: Path | None = Field(default=None, description="PEM CA bundle that signed the aggregator's certificate.")
    cert_file: Path | None = Field(default=None, description="PEM client certificate (mutual TLS).")
    key_file: Path | None = Field(default=None, description="PEM key of the client certificate (mutual TLS).")
    server_name: str | None = Field(default=None, description="Name to verify the server certificate against.")

    @model_validator(mode="after")
    def _pairs(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file must be set together (mutual TLS)")
        return self


class BackboneSettings(_Section):
    """The frozen CLIP this site has installed; the run's backbone must match it."""

    model: str = Field(description="open_clip model name, e.g. ViT-B-32.")
    weights: str | None = Field(default=None, description="Local weights file/dir or tag; default: the run's.")
    preprocess: Literal["clip", "paper"] = "clip"
    seed: int = Field(default=0, ge=0, description="Seed of a random-init backbone (tests and demos only).")


class AgentSettings(ServiceSettings):
    """Every setting of the hospital agent (``run``, ``embed``, ``status``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__")
    label: ClassVar[str] = "agent settings"

    site: str = Field(description="This site's enrolled name (the aggregator's name for the token).")
    aggregator: str = Field(
        description="host:port of the aggregator's gRPC endpoint (a Service address), or several separated by "
        "commas (active/standby aggregators): the agent moves to the next one when a call finds it unavailable."
    )
    token: SecretStr | None = Field(default=None, description="The site's bearer token (shown once at enrolment).")
    token_file: Path | None = Field(default=None, description="File holding the token (e.g. a systemd credential).")
    insecure_loopback: bool = Field(default=False, description="Plaintext gRPC; only to a loopback aggregator.")
    tls: TlsSettings = Field(default_factory=TlsSettings)
    data: DataSettings
    backbone: BackboneSettings | None = Field(default=None, description="Local backbone; default: the run's.")
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N | mps")

    state_dir: Path = Field(default=Path("/var/lib/fedmedclip/agent"), description="Head, residual, FAM, state.")
    bundle_root: Path = Field(default=Path("/var/lib/fedmedclip/bundles"), description="Bundles for the API.")
    cache_dir: Path | None = Field(default=None, description="Embedding cache; default <state_dir>/cache.")
    keep_bundles: int = Field(default=5, ge=1, description="Bundle versions kept on disk per site.")

    embed_batch_size: int = Field(default=64, ge=1, description="Images per backbone pass.")
    embed_workers: int = Field(default=2, ge=0, description="DataLoader worker processes decoding images.")
    train_seed: int = Field(default=0, ge=0, description="Seed of the head's initialisation and batch order.")
    max_epsilon: float | None = Field(
        default=None,
        gt=0,
        description="This site's own privacy budget per run: caps the run's target ε; when set, the site takes "
        "no part in runs without record-level differential privacy.",
    )
    torch_threads: int | None = Field(default=None, ge=1, description="Cap torch's CPU threads (shared servers).")

    poll_wait_s: int = Field(default=20, ge=0, le=60, description="How long a PollTask may be held.")
    heartbeat_s: float = Field(default=30.0, ge=0.5, description="Heartbeat interval while running.")
    idle_poll_s: float = Field(default=30.0, gt=0, description="Join again this often while no run is active.")
    backoff_initial_s: float = Field(default=1.0, gt=0, description="First retry delay when unreachable.")
    backoff_max_s: float = Field(default=60.0, gt=0, description="Longest retry delay (capped exponential).")
    rpc_timeout_s: float = Field(default=120.0, gt=0, description="Deadline of one RPC (polls add their wait).")
    max_message_bytes: int = Field(default=4 << 20, ge=64 << 10, description="Largest gRPC message either way.")
    chunk_bytes: int = Field(default=256 << 10, ge=1 << 10, le=1 << 20, description="Update bytes per message.")
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("site")
    @classmethod
    def _site_name(cls, value: str) -> str:
        if not _SITE_NAME.fullmatch(value):
            raise ValueError(
                f"site must be 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit, got {value!r}"
            )
        return value

    @field_validator("aggregator", mode="before")
    @classmethod
    def _target(cls, value: object) -> object:
        if isinstance(value, list | tuple):  # a YAML list in the config file
            value = ",".join(str(item) for item in value)
        if not isinstance(value, str):
            return value
        targets = [part.strip() for part in value.split(",") if part.strip()]
        if not targets:
            raise ValueError("aggregator must be HOST:PORT, or several separated by commas")
        for target in targets:
            split_target(target)
        if len(set(targets)) != len(targets):
            raise ValueError(f"aggregator lists an address twice: {value!r}")
        return ",".join(targets)

    @property
    def aggregators(self) -> tuple[str, ...]:
        """Every aggregator address, in the order the agent tries them."""
        return tuple(self.aggregator.split(","))

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.fullmatch(value.strip().lower()):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {value!r}")
        return value.strip().lower()

    @model_validator(mode="after")
    def _secure_transport(self) -> AgentSettings:
        hosts = [split_target(target)[0] for target in self.aggregators]
        host = next((h for h in hosts if not is_loopback(h)), hosts[0])
        tls_given = any(getattr(self.tls, name) is not None for name in ("ca_file", "cert_file", "key_file"))
        if self.insecure_loopback and not is_loopback(host):
            raise ValueError(
                f"insecure_loopback is only allowed towards a loopback aggregator (127.0.0.1, ::1, localhost); "
                f"the aggregator is {host!r}. Use TLS (tls.ca_file) for any other address."
            )
        if self.insecure_loopback and tls_given:
            raise ValueError("insecure_loopback and tls.* settings exclude each other: choose plaintext or TLS")
        if self.token is not None and self.token_file is not None:
            raise ValueError("set token or token_file, not both")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be >= backoff_initial_s")
        if self.chunk_bytes + (16 << 10) > self.max_message_bytes:
            raise ValueError("chunk_bytes must be at least 16 KiB below max_message_bytes")
        return self

    @property
    def effective_cache_dir(self) -> Path:
        return self.cache_dir if self.cache_dir is not None else self.state_dir / "cache"

    def require_token(self) -> str:
        """The bearer token from ``token`` or ``token_file``, or ``ConfigError`` saying how to give one."""
        if self.token is not None:
            value = self.token.get_secret_value().strip()
        elif self.token_file is not None:
            try:
                value = self.token_file.read_text(encoding="utf-8").strip()
            except OSError as error:
                raise ConfigError(f"cannot read token_file {self.token_file}: {error.strerror or error}") from error
        else:
            raise ConfigError(f"no site token: set token (or {ENV_PREFIX}TOKEN) or token_file")
        if not value:
            raise ConfigError("the site token is empty")
        return value


def load_settings(config_file: Path | None = None, **overrides: Any) -> AgentSettings:
    """Settings from overrides (``None`` ignored), the environment, ``config_file`` and defaults.

    Raises ``ConfigError`` with every problem listed by setting name (input values are never echoed: they
    may hold the token).
    """
    return AgentSettings.load(config_file, **overrides)
