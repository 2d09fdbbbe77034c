"""``GET /v1/sites`` and ``GET /v1/sites/{site}``."""

from __future__ import annotations

from fastapi import APIRouter

from inference_api import service
from inference_api.errors import error_responses
from inference_api.routes.deps import PrincipalDep, ServicesDep, SiteDep
from inference_api.schemas import SiteDetail, SitesResponse

router = APIRouter(prefix="/v1", tags=["sites"])


@router.get("/sites", response_model=SitesResponse, responses=error_responses(401, 503))
async def list_sites(services: ServicesDep, principal: PrincipalDep) -> SitesResponse:
    """The sites this key may use, with the bundle version each serves."""
    return service.list_sites(services, principal)


@router.get("/sites/{site}", response_model=SiteDetail, responses=error_responses(401, 403, 404, 503))
async def describe_site(site: SiteDep, services: ServicesDep) -> SiteDetail:
    """Classes, versions on disk and the manifest's metrics for one site."""
    return service.describe_site(services, site)
