"""The inference API's one settings class: env vars ``FEDMEDCLIP_API_*`` over an optional YAML file.

Precedence, highest first: values passed in code, environment variables, the YAML file (which may use
``${VAR}``), the defaults; loading comes from ``fedmedclip.settings.ServiceSettings``.
``FEDMEDCLIP_API_API_KEYS`` takes a JSON list; in YAML it is a normal list (see docs/inference_api.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from fedmedclip.bundle import check_name
from fedmedclip.settings import ConfigError, ServiceSettings

__all__ = ["ALL_SITES", "ENV_PREFIX", "ApiKeyConfig", "ApiSettings", "ConfigError", "load_settings"]

ENV_PREFIX = "FEDMEDCLIP_API_"
ALL_SITES = "*"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class ApiKeyConfig(BaseModel):
    """One client key: only its sha256 is stored (keys are random 256-bit tokens, so a fast hash suffices)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, description="Who holds the key; appears in logs.")
    sha256: str = Field(description="Hex sha256 of the key, from `fedmedclip api hash-key`.")
    sites: list[str] = Field(min_length=1, description=f"Sites the key may use; {ALL_SITES!r} means every site.")

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        value = value.strip().lower().removeprefix("sha256:")
        if not _SHA256_HEX.fullmatch(value):
            raise ValueError("must be 64 hex characters (the sha256 of the key, never the key itself)")
        return value

    @field_validator("sites")
    @classmethod
    def _site_names(cls, value: list[str]) -> list[str]:
        return [site if site == ALL_SITES else check_name("site", site) for site in value]


class ApiSettings(ServiceSettings):
    """Everything the inference API reads from its environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True)
    label: ClassVar[str] = "inference API settings"

    bundle_root: Path = Field(description="Folder holding <site>/<version>/ bundles and <site>/current.")
    model: str = Field("ViT-B-32", description="open_clip model name; must match the bundles.")
    weights: str | None = Field("openai", description="Pretrained tag, weights file or directory, or 'random'.")
    preprocess: Literal["clip", "paper"] = "clip"
    seed: int = Field(0, description="Seed for a random-init backbone (tests and demos only).")
    device: str | None = Field(None, description="torch device; default cuda when available, else cpu.")

    api_keys: list[ApiKeyConfig] = Field(default_factory=list)
    allow_unauthenticated: bool = Field(
        False, description="Serve without keys. Loopback only; for demos and local tests."
    )

    tls_certfile: Path | None = Field(None, description="PEM certificate chain: serve HTTPS (docs/design.md §6).")
    tls_keyfile: Path | None = Field(None, description="PEM private key for tls_certfile.")
    allow_plaintext: bool = Field(
        False, description="Serve plain HTTP on a non-loopback address (only behind a TLS-terminating proxy)."
    )

    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Largest request body accepted.")
    max_images: int = Field(16, ge=1, le=256, description="Most images in one predict request.")
    max_image_pixels: int | None = Field(
        None,
        ge=1,
        description="Largest image accepted (width × height; × frames × samples for DICOM), checked from its "
        "header before decoding. Default: 256 × the model's input side² (12.8 MP for a 224 px model).",
    )
    max_aspect_ratio: float = Field(
        20.0,
        ge=1,
        description="Thinnest image accepted, longer side : shorter side; also bounds the image after "
        "preprocessing to this many model inputs.",
    )
    bundle_scan_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600,
        description="How long one site's bundle folder may take to scan; a site that blocks (a FIFO, a hung "
        "mount) keeps serving what it had and is retried, and never holds up the other sites.",
    )

    inline_decode_bytes: int = Field(
        64 * 1024,
        ge=0,
        description="Requests whose uploads total at most this many bytes are decoded on the event loop: for "
        "small images a thread hand-off costs more CPU than the decoding. 0: always decode in a thread.",
    )
    max_batch: int = Field(32, ge=1, le=1024, description="Most images encoded together by the backbone.")
    batch_wait_ms: float = Field(
        50.0,
        ge=0,
        le=1000,
        description="Under load only, the longest a batch waits to fill (also capped at a tenth of the last "
        "batch's compute time). 0: batch only what queued meanwhile.",
    )
    max_queued_images: int = Field(512, ge=1, description="Images waiting for the backbone before 503 busy.")
    reload_interval_s: float = Field(2.0, gt=0, le=3600, description="How often bundle folders are checked.")

    enable_docs: bool = Field(False, description="Serve /docs (Swagger UI loads its assets from a CDN).")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = False

    @model_validator(mode="after")
    def _deny_by_default(self) -> ApiSettings:
        if not self.api_keys and not self.allow_unauthenticated:
            raise ValueError(
                f"no API keys configured: set {ENV_PREFIX}API_KEYS (or api_keys in the config file) with "
                "hashes from `fedmedclip api hash-key`, or allow_unauthenticated for a loopback-only demo"
            )
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together: set both or neither")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_certfile is not None


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> ApiSettings:
    """Build the settings from code overrides, the environment and ``config_file`` (YAML), in that order;
    ``ConfigError`` lists every problem by setting name."""
    return ApiSettings.load(config_file, **overrides)
