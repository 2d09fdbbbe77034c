"""The data plane: plain functions the routes call. No FastAPI here, so they are easy to test and reuse."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import anyio.to_thread
import torch

from fedmedclip.bundle import Bundle, list_versions
from fedmedclip.model.ensemble import EnsembleOutput
from fedmedclip.privacy.ledger import PrivacyGuarantee, describe
from inference_api.batcher import MicroBatcher
from inference_api.decoding import Limits, Upload, default_max_pixels, prepare_batch
from inference_api.errors import (
    NoBundleError,
    NoImagesError,
    TooManyImagesError,
    UnknownSiteError,
    UnknownVersionError,
)
from inference_api.keys import Principal
from inference_api.metrics import ApiMetrics
from inference_api.registry import LoadedBundle, ModelRegistry, SiteState
from inference_api.schemas import (
    Contributions,
    ImagePrediction,
    ModelPrivacy,
    PredictResponse,
    Readiness,
    SiteDetail,
    SitePrivacy,
    SitesResponse,
    SiteSummary,
)
from inference_api.settings import ApiSettings


@dataclass
class Services:
    """What the lifespan builds and the routes use."""

    settings: ApiSettings
    registry: ModelRegistry
    batcher: MicroBatcher
    metrics: ApiMetrics


def site_state(services: Services, site: str) -> SiteState:
    state = services.registry.get(site)
    if state is None:
        raise UnknownSiteError(f"unknown site {site[:100]!r}")
    return state


def loaded_bundle(services: Services, site: str) -> LoadedBundle:
    state = site_state(services, site)
    if state.loaded is None:
        raise NoBundleError(f"site {site!r} has no verified bundle yet; the agent publishes one after its first round")
    return state.loaded


def pinned_bundle(services: Services, site: str, version: str | None) -> LoadedBundle:
    """The bundle ``site`` serves now; with ``version``, only if that is the version being served."""
    loaded = loaded_bundle(services, site)
    if version is not None and version != loaded.bundle.version:
        raise UnknownVersionError(
            f"site {site!r} does not serve version {version[:100]!r}; it serves {loaded.bundle.version!r}"
        )
    return loaded


@dataclass(frozen=True)
class Classified:
    """One request's answer: the bundle that answered and the ensemble's tensors (one row per image)."""

    loaded: LoadedBundle
    output: EnsembleOutput


async def classify(
    services: Services,
    site: str,
    uploads: Sequence[Upload],
    *,
    version: str | None = None,
    empty_hint: str = "send one or more files in the multipart field 'files'",
) -> Classified:
    """The data plane both faces (/v1 and the Open Inference Protocol /v2) call: decode, batch, classify."""
    limits = services.settings
    if not uploads:
        raise NoImagesError(f"no image in the request: {empty_hint}")
    if len(uploads) > limits.max_images:
        raise TooManyImagesError(f"{len(uploads)} images in one request; the limit is {limits.max_images}")
    # Taken once: a hot swap during this request does not change which bundle answers it.
    loaded = pinned_bundle(services, site, version)
    backbone = services.registry.backbone
    decode = functools.partial(prepare_batch, uploads, backbone.preprocess, upload_limits(limits, backbone.image_size))
    if sum(len(upload.data) for upload in uploads) <= limits.inline_decode_bytes:
        pixels = decode()  # small images decode in well under a millisecond: cheaper than a thread hand-off
    else:
        pixels = await anyio.to_thread.run_sync(decode)
    output = await services.batcher.run(pixels, loaded.classifier)
    services.metrics.images.inc(len(uploads))
    return Classified(loaded, output)


def upload_limits(settings: ApiSettings, input_side: int) -> Limits:
    """The per-upload limits for a model whose input is ``input_side`` pixels square."""
    return Limits(
        max_pixels=settings.max_image_pixels or default_max_pixels(input_side),
        max_aspect_ratio=settings.max_aspect_ratio,
        input_side=input_side,
    )


async def predict(services: Services, site: str, uploads: Sequence[Upload]) -> PredictResponse:
    """Classify every upload with ``site``'s current bundle; the response names the version that answered."""
    classified = await classify(services, site, uploads)
    bundle, output = classified.loaded.bundle, classified.output
    return PredictResponse(
        site=site,
        bundle_version=bundle.version,
        fam_version=bundle.fam_version,
        classes=list(bundle.classes),
        calibrated=bundle.calibration is not None,
        warning=clinical_warning(bundle),
        predictions=[_prediction(bundle.classes, output, i, u.filename) for i, u in enumerate(uploads)],
    )


def _prediction(classes: Sequence[str], output: EnsembleOutput, i: int, filename: str | None) -> ImagePrediction:
    alpha = _finite(float(output.alpha[i]))
    return ImagePrediction(
        filename=filename,
        predicted_class=classes[int(output.probs[i].argmax())],
        probabilities=_per_class(classes, output.probs[i]),
        zero_shot=_per_class(classes, output.zero_shot[i]),
        head=_per_class(classes, output.head[i]) if output.head is not None else None,
        alpha=alpha,
        contributions=Contributions(zero_shot=1.0 - alpha, head=alpha),
    )


def _per_class(classes: Sequence[str], probs: torch.Tensor) -> dict[str, float]:
    return {name: _finite(float(p)) for name, p in zip(classes, probs.tolist(), strict=True)}


def _finite(value: float) -> float:
    # JSON has no NaN; a verified bundle should never produce one, but a response must always serialise.
    return value if math.isfinite(value) else 0.0


def clinical_warning(bundle: Bundle | None) -> str | None:
    """The "not for clinical use" line the page shows, or ``None`` when the bundle deserves no such warning."""
    if bundle is None:
        return None
    reasons = []
    if bundle.backbone.spec.is_random:
        reasons.append("the CLIP backbone is randomly initialised, not pretrained")
    if bundle.calibration is None:
        reasons.append("the probabilities are not calibrated")
    return f"Not for clinical use: {'; '.join(reasons)}." if reasons else None


def _summary(state: SiteState) -> SiteSummary:
    bundle = state.loaded.bundle if state.loaded is not None else None
    return SiteSummary(
        site=state.name,
        ready=bundle is not None,
        version=bundle.version if bundle else None,
        classes=list(bundle.classes) if bundle else [],
        has_head=bool(bundle and bundle.has_head),
        calibrated=bool(bundle and bundle.calibration is not None),
        random_init_backbone=bool(bundle and bundle.backbone.spec.is_random),
        warning=clinical_warning(bundle),
    )


def list_sites(services: Services, principal: Principal) -> SitesResponse:
    """The sites this key may use (others are not even named)."""
    return SitesResponse(
        sites=[_summary(state) for state in services.registry.sites() if principal.may_use(state.name)]
    )


def describe_site(services: Services, site: str) -> SiteDetail:
    state = site_state(services, site)
    bundle = state.loaded.bundle if state.loaded is not None else None
    return SiteDetail(
        **_summary(state).model_dump(),
        current=state.pointer,
        versions=list_versions(services.registry.root, site),
        fam_version=bundle.fam_version if bundle else None,
        created=bundle.created if bundle else None,
        prompts=list(bundle.prompts) if bundle else [],
        metrics=dict(bundle.metrics) if bundle else {},
        backbone=bundle.backbone.spec.describe() if bundle else None,
        calibration=bundle.calibration.to_dict() if bundle and bundle.calibration else None,
        last_error=state.error,
        privacy=SitePrivacy(fam=_privacy(bundle.fam_privacy), head=_privacy(bundle.head_privacy)) if bundle else None,
    )


def _privacy(guarantee: PrivacyGuarantee | None) -> ModelPrivacy:
    return ModelPrivacy(
        statement=describe(guarantee),
        epsilon=None if guarantee is None else guarantee.epsilon,
        delta=None if guarantee is None else guarantee.delta,
    )


def readiness(services: Services | None) -> Readiness:
    if services is None:
        return Readiness(ready=False, backbone=None, sites_ready=0)
    return Readiness(
        ready=services.registry.ready,
        backbone=services.registry.backbone.spec.describe(),
        sites_ready=sum(1 for state in services.registry.sites() if state.loaded is not None),
    )
