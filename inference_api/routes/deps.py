"""Shared route dependencies: the services built by the lifespan, and API-key checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from inference_api.errors import BusyError, ForbiddenError, UnauthorizedError
from inference_api.keys import ANONYMOUS, KeyRing, Principal
from inference_api.service import Services

API_KEY_HEADER = "X-API-Key"
_api_key = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="A clinician key, scoped to one or more sites."
)


# The dependencies are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the thread pool,
# and three thread hand-offs per request cost more CPU than these few microseconds of work (issue 15).
async def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:  # only between process start and the end of the lifespan's startup
        raise BusyError("the service is starting", headers={"Retry-After": "2"})
    return services


async def authenticate(request: Request, key: Annotated[str | None, Security(_api_key)]) -> Principal:
    keyring: KeyRing | None = request.app.state.keyring
    if keyring is None:  # allow_unauthenticated: a loopback demo
        return ANONYMOUS
    if not key:
        raise UnauthorizedError(f"missing API key: send it in the {API_KEY_HEADER} header")
    principal = keyring.authenticate(key)
    if principal is None:
        raise UnauthorizedError("invalid API key")
    return principal


async def authorised_site(site: str, principal: Annotated[Principal, Depends(authenticate)]) -> str:
    # Checked before the site's existence, so a key learns nothing about sites outside its scope.
    if not principal.may_use(site):
        raise ForbiddenError(f"this API key may not use site {site[:100]!r}")
    return site


ServicesDep = Annotated[Services, Depends(get_services)]
PrincipalDep = Annotated[Principal, Depends(authenticate)]
SiteDep = Annotated[str, Depends(authorised_site)]
