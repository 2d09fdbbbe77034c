"""Authenticated encryption of the shares one site sends another through the aggregator."""

from __future__ import annotations

import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

_NONCE_BYTES = 12


class DecryptionFailed(ValueError):  # noqa: N818 - reads as what happened
    """A ciphertext was forged, altered, or addressed to someone else."""


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """``nonce || ciphertext`` under ``key``; ``associated`` (sender, receiver, round) is authenticated."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    if len(sealed) < _NONCE_BYTES + 16:
        raise DecryptionFailed("ciphertext too short")
    try:
        return ChaCha20Poly1305(key).decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], associated)
    except InvalidTag as error:
        raise DecryptionFailed("ciphertext failed authentication") from error
