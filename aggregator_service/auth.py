"""Credentials: site tokens (random, shown once, stored as a hash) and the admin bearer token; who a call is.

Site tokens carry 256 bits of randomness, so a plain SHA-256 is enough to store them: there is nothing to
brute-force, and a fast hash lets every call look its site up by an indexed column. Comparisons of secrets
use ``hmac.compare_digest`` so their timing does not depend on how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable

from aggregator_service.context import Services
from aggregator_service.errors import InvalidArgument, PermissionDenied, Unauthenticated
from aggregator_service.store.base import SiteRecord

TOKEN_PREFIX = "fmc_"  # noqa: S105 - not a secret: makes tokens recognisable to secret scanners
SITE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_BEARER = re.compile(r"^Bearer\s+(\S+)\s*$", re.IGNORECASE)


def new_site_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same_secret(presented: str, expected: str) -> bool:
    """Constant-time equality of two secrets of any lengths (compares their digests)."""
    return hmac.compare_digest(hash_token(presented), hash_token(expected))


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The token of the call's ``authorization: Bearer <token>`` metadata, or ``Unauthenticated``."""
    values = [value for key, value in metadata if key.lower() == "authorization"]
    if not values:
        raise Unauthenticated("missing credential: send 'authorization: Bearer <token>' metadata")
    if len(values) > 1:
        raise Unauthenticated("more than one authorization header")
    value = values[0].decode("utf-8", "replace") if isinstance(values[0], bytes) else values[0]
    match = _BEARER.match(value)
    if match is None:
        raise Unauthenticated("malformed authorization metadata: expected 'Bearer <token>'")
    return match.group(1)


def check_site_name(name: str) -> str:
    if not SITE_NAME_PATTERN.match(name):
        raise InvalidArgument(f"invalid site name {name!r}: use letters, digits, '-', '_' or '.', at most 64")
    return name


def authenticate_site(svc: Services, token: str) -> SiteRecord:
    """The enabled site the token belongs to; the admin token is not a site.

    The lookup is by the token's SHA-256, so its timing says nothing about the token itself.
    """
    site = svc.store.site_by_token_hash(hash_token(token), svc.clock())
    if site is None:
        if same_secret(token, svc.admin_token):
            raise PermissionDenied("the admin credential cannot act as a site; use a site token")
        raise Unauthenticated("unknown site token")
    if not site.enabled:
        raise Unauthenticated(f"the token of site {site.name!r} was revoked")
    return site


def authenticate_admin(svc: Services, token: str) -> None:
    if same_secret(token, svc.admin_token):
        return
    if svc.store.site_by_token_hash(hash_token(token), svc.clock()) is not None:
        raise PermissionDenied("site credentials cannot call Admin RPCs")
    raise Unauthenticated("unknown admin credential")
