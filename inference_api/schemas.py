"""Response bodies, as they appear in the OpenAPI document."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class Contributions(BaseModel):
    """How much each component weighs in ``p = (1-α)·p_F + α·p_M``."""

    zero_shot: float = Field(description="1 − α: weight of CLIP zero-shot matching through the federated FAM.")
    head: float = Field(description="α: weight of the site's private head (0 for a site without one).")


class ImagePrediction(BaseModel):
    filename: str | None
    predicted_class: str
    probabilities: dict[str, float] = Field(
        description="Ensemble probability per class, p; temperature-calibrated when the response says `calibrated`."
    )
    zero_shot: dict[str, float] = Field(description="Zero-shot component p_F per class.")
    head: dict[str, float] | None = Field(description="Private-head component p_M per class; null without a head.")
    alpha: float = Field(description="Entropy weight α on the head.")
    contributions: Contributions


class PredictResponse(BaseModel):
    site: str
    bundle_version: str = Field(description="The bundle version that answered.")
    fam_version: int
    classes: list[str]
    calibrated: bool = Field(description="The probabilities are calibrated on the site's validation split.")
    warning: str | None = Field(description='"Not for clinical use: …" when the model does not deserve trust.')
    predictions: list[ImagePrediction]


class SiteSummary(BaseModel):
    site: str
    ready: bool = Field(description="A verified bundle is loaded and answering.")
    version: str | None = Field(description="The bundle version being served.")
    classes: list[str]
    has_head: bool
    calibrated: bool = Field(description="The bundle carries a temperature fitted on the site's validation split.")
    random_init_backbone: bool = Field(description="The frozen CLIP is randomly initialised, not pretrained.")
    warning: str | None = Field(
        description='"Not for clinical use: …" when the backbone is random-init or the bundle is uncalibrated.'
    )


class SitesResponse(BaseModel):
    sites: list[SiteSummary]


class SiteDetail(SiteSummary):
    current: str | None = Field(description="The version the site's `current` pointer names on disk.")
    versions: list[str] = Field(description="Versions on disk, oldest first.")
    fam_version: int | None
    created: datetime | None
    prompts: list[str]
    metrics: dict[str, float] = Field(description="Metrics recorded in the manifest by the agent.")
    backbone: str | None
    calibration: dict[str, float | int | str] | None = Field(
        description="The fitted temperature and ECE before/after on validation, as in the manifest."
    )
    last_error: str | None = Field(description="Why the newest version was refused, if it was.")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    backbone: str | None
    sites_ready: int
