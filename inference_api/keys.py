"""API keys: generation, hashing, and constant-time lookup of the key a request presents."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from inference_api.settings import ALL_SITES, ApiKeyConfig

KEY_PREFIX = "fmc_"
_MAX_KEY_LENGTH = 512  # longer headers are refused before hashing


def generate_key() -> str:
    """A new random key (256 bits); show it once, store only :func:`hash_key` of it."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who called: the key's name and the sites it may use."""

    name: str
    sites: frozenset[str]

    def may_use(self, site: str) -> bool:
        return ALL_SITES in self.sites or site in self.sites


ANONYMOUS = Principal("anonymous", frozenset({ALL_SITES}))


class KeyRing:
    """The configured keys. ``authenticate`` compares against every key without stopping at a match, with
    ``hmac.compare_digest``, so the time taken says nothing about which key, or how much of one, matched."""

    def __init__(self, keys: Sequence[ApiKeyConfig]) -> None:
        self._entries = [(bytes.fromhex(k.sha256), Principal(k.name, frozenset(k.sites))) for k in keys]

    def authenticate(self, presented: str) -> Principal | None:
        if not presented or len(presented) > _MAX_KEY_LENGTH:
            return None
        digest = hashlib.sha256(presented.encode("utf-8", errors="replace")).digest()
        found: Principal | None = None
        for stored, principal in self._entries:
            if hmac.compare_digest(digest, stored):
                found = principal
        return found
