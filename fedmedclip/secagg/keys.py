"""X25519 key pairs and HKDF-SHA256 derivation of per-purpose, per-round 256-bit keys."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32

# Purposes are bound into the HKDF info, so the same X25519 secret never keys two different things.
PURPOSE_MASK = b"fedmedclip/secagg/v1/pairwise-mask"
PURPOSE_SHARES = b"fedmedclip/secagg/v1/share-encryption"
PURPOSE_SELF_MASK = b"fedmedclip/secagg/v1/self-mask"


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair as raw 32-byte strings (the private half never leaves the site unshared)."""

    private: bytes
    public: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        return cls.from_private(X25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def from_private(cls, private: bytes) -> KeyPair:
        key = X25519PrivateKey.from_private_bytes(private)
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(private=private, public=public)


def derive(secret: bytes, purpose: bytes, context: bytes) -> bytes:
    """A 256-bit key for ``purpose`` in ``context`` (run and round), from a shared or random ``secret``."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=purpose + b"|" + context)
    return hkdf.derive(secret)


def agree(private: bytes, peer_public: bytes, purpose: bytes, context: bytes) -> bytes:
    """The key both ends of a pair derive from their X25519 agreement; symmetric in the two parties.

    Raises ``ValueError`` for a malformed public key or one that yields the all-zero shared secret (a
    low-order point), which ``cryptography`` refuses.
    """
    if len(peer_public) != KEY_BYTES:
        raise ValueError(f"an X25519 public key has {KEY_BYTES} bytes, got {len(peer_public)}")
    shared = X25519PrivateKey.from_private_bytes(private).exchange(X25519PublicKey.from_public_bytes(peer_public))
    return derive(shared, purpose, context)
