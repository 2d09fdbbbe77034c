"""The mask stream: ChaCha20 keyed by a full 256-bit key, read as integers modulo 2^bits."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from fedmedclip.secagg.keys import KEY_BYTES

MAX_BITS = 32  # masks are drawn as uint32 words; sums are kept in uint64, so no intermediate overflow

# Each key is derived for one purpose and one round (keys.derive), so a constant nonce never repeats a
# (key, nonce) pair; the 16-byte value is ChaCha20's 32-bit block counter followed by its 96-bit nonce.
_NONCE = bytes(16)


def modulus_mask(bits: int) -> np.uint64:
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"modulus bits must be in 1..{MAX_BITS}, got {bits}")
    return np.uint64((1 << bits) - 1)


def mask_stream(key: bytes, count: int, bits: int) -> np.ndarray:
    """``count`` uniform integers in [0, 2^bits) as uint64, from the keystream of ``key``."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"a mask key has {KEY_BYTES} bytes, got {len(key)}")
    if count < 0:
        raise ValueError("count must be >= 0")
    mask = modulus_mask(bits)
    encryptor = Cipher(algorithms.ChaCha20(key, _NONCE), mode=None).encryptor()
    words = np.frombuffer(encryptor.update(bytes(4 * count)), dtype="<u4")
    # Taking the low bits of a uniform 32-bit word is uniform on [0, 2^bits) because 2^bits divides 2^32.
    return words.astype(np.uint64) & mask
