"""The aggregator's settings: one pydantic-settings class, env prefix ``FEDMEDCLIP_AGGREGATOR_``.

Loading (flags over environment over the YAML file over defaults, ``${VAR}`` in the file, unknown keys
refused) comes from ``fedmedclip.settings.ServiceSettings``. Validators refuse insecure combinations instead
of warning about them: plaintext gRPC is only possible with ``insecure_loopback`` *and* a loopback bind
address, and a weak admin token is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from fedmedclip.netaddr import is_loopback
from fedmedclip.settings import ConfigError, ServiceSettings

__all__ = ["ENV_PREFIX", "AggregatorSettings", "ConfigError", "is_loopback"]

ENV_PREFIX = "FEDMEDCLIP_AGGREGATOR_"
MIN_ADMIN_TOKEN_CHARS = 24
# Values people paste from examples; refused even when long enough.
_WEAK_TOKENS = frozenset({"changeme", "change-me", "admin", "password", "secret", "token", "default"})
_MESSAGE_OVERHEAD = 16 << 10  # room for a chunk message's framing around its data bytes


class AggregatorSettings(ServiceSettings):
    """Every setting of the aggregator service and of the admin CLI that talks to it; ``load`` reads them."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)
    label: ClassVar[str] = "aggregator settings"

    # --- serving ---------------------------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="Address the gRPC server binds.")
    port: int = Field(default=50051, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    database_url: str = Field(
        default="sqlite:///fedmedclip-aggregator.sqlite3",
        description="SQLAlchemy URL: sqlite:///FILE (default) or postgresql+psycopg://USER:PASS@HOST/DB.",
    )
    admin_token: SecretStr | None = Field(
        default=None, description="The admin credential (bearer token) for Admin RPCs."
    )
    insecure_loopback: bool = Field(default=False, description="Allow plaintext gRPC; only with a loopback host.")
    tls_cert_file: Path | None = Field(default=None, description="PEM server certificate (chain).")
    tls_key_file: Path | None = Field(default=None, description="PEM private key of the server certificate.")
    tls_client_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle; when set, clients need a cert (mTLS)."
    )
    metrics_host: str = Field(default="127.0.0.1", description="Address of the Prometheus metrics HTTP endpoint.")
    metrics_port: int | None = Field(
        default=9464, ge=0, le=65535, description="Metrics port; 0 any free port; null off."
    )
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # --- limits ----------------------------------------------------------------------------------------
    max_message_bytes: int = Field(default=4 << 20, ge=64 << 10, description="Largest single gRPC message, both ways.")
    max_update_bytes: int = Field(default=16 << 20, ge=1, description="Largest update payload a site may upload.")
    chunk_bytes: int = Field(default=256 << 10, ge=1 << 10, description="Data bytes per streamed model chunk.")
    max_workers: int = Field(default=64, ge=4, description="gRPC worker threads (long polls hold one each).")
    max_calls_per_site: int = Field(
        default=8, ge=2, description="Federation calls one site may have in flight; more get RESOURCE_EXHAUSTED."
    )
    busy_retry_s: float = Field(default=2.0, gt=0, description="Retry hint sent with a per-site limit refusal.")
    stream_idle_timeout_s: float = Field(
        default=30.0, gt=0, description="A stream (upload or download) that moves nothing this long is cancelled."
    )
    audit_window_s: float = Field(
        default=60.0, gt=0, description="Refusals are counted per peer, call and reason, and written once per window."
    )
    audit_retention_days: float = Field(default=90.0, gt=0, description="Audit rows older than this are deleted.")
    poll_wait_cap_s: float = Field(default=20.0, gt=0, description="Longest a PollTask is held before a wait task.")
    shutdown_grace_s: float = Field(default=10.0, ge=0, description="On SIGTERM, how long in-flight calls may finish.")
    torch_threads: int = Field(
        default=1,
        ge=1,
        description="torch intra-op threads, only if torch is loaded in the process (the aggregator itself is numpy).",
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL", description="SQLite durability: FULL survives power loss; NORMAL (WAL) only process crashes."
    )

    # --- failover and credentials ----------------------------------------------------------------------
    leader_lease_s: float = Field(
        default=10.0,
        ge=2.0,
        le=300.0,
        description="PostgreSQL active/standby: how long the leader's lease lasts unrenewed (a standby takes "
        "over within about this long after the leader dies).",
    )
    site_token_grace_s: float = Field(
        default=86_400.0,
        ge=0.0,
        description="After `sites rotate`, how long the replaced token keeps working (default: one day).",
    )

    # --- the admin CLI as a client ---------------------------------------------------------------------
    admin_target: str | None = Field(default=None, description="host:port the CLI dials; default host:port above.")
    admin_tls_ca_file: Path | None = Field(default=None, description="CA bundle the CLI verifies the server with.")
    admin_tls_cert_file: Path | None = Field(default=None, description="Client certificate for mTLS (CLI).")
    admin_tls_key_file: Path | None = Field(default=None, description="Client key for mTLS (CLI).")
    admin_tls_server_name: str | None = Field(default=None, description="Name to check the server certificate against.")

    @field_validator("admin_token")
    @classmethod
    def _strong_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value()
        if len(token) < MIN_ADMIN_TOKEN_CHARS or token.lower() in _WEAK_TOKENS or len(set(token)) < 8:
            raise ValueError(
                f"admin_token is too weak: use at least {MIN_ADMIN_TOKEN_CHARS} random characters, e.g. "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        return value

    @model_validator(mode="after")
    def _secure_transport(self) -> AggregatorSettings:
        if self.insecure_loopback and not is_loopback(self.host):
            raise ValueError(
                f"insecure_loopback is only allowed with a loopback host (127.0.0.1, ::1, localhost); host is "
                f"{self.host!r}. Configure tls_cert_file and tls_key_file to serve on other addresses."
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        if self.tls_cert_file is None and not self.insecure_loopback:
            raise ValueError(
                "no TLS configured: set tls_cert_file and tls_key_file, or allow plaintext on a loopback address "
                "with insecure_loopback (--insecure-loopback)"
            )
        if (self.admin_tls_cert_file is None) != (self.admin_tls_key_file is None):
            raise ValueError("admin_tls_cert_file and admin_tls_key_file must be set together")
        if self.chunk_bytes + _MESSAGE_OVERHEAD > self.max_message_bytes:
            raise ValueError(
                f"chunk_bytes ({self.chunk_bytes}) must be at least {_MESSAGE_OVERHEAD} below max_message_bytes "
                f"({self.max_message_bytes})"
            )
        return self

    @property
    def uses_tls(self) -> bool:
        return self.tls_cert_file is not None

    def require_admin_token(self) -> str:
        """The admin token, or ``ConfigError`` saying how to set it."""
        if self.admin_token is None:
            raise ConfigError(f"no admin credential: set {ENV_PREFIX}ADMIN_TOKEN (or admin_token in the config file)")
        return self.admin_token.get_secret_value()

    def client_target(self) -> str:
        """Where the admin CLI dials: ``admin_target``, else the serving host and port."""
        if self.admin_target:
            return self.admin_target
        if self.port == 0:
            raise ConfigError("port is 0 (any free port): tell the CLI where the server is with --server HOST:PORT")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104 - comparing
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
