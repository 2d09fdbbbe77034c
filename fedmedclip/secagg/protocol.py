"""The four phases of a secure round, as a client state machine and a pure server-side unmasking.

Phases (docs/design.md §4 and §6):
1. **Advertise keys.** Each site sends two fresh X25519 public keys: one for encrypting shares to peers
   (``channel``), one for pairwise masks (``mask``).
2. **Share keys.** Each site splits its mask private key and a random self-mask seed into Shamir shares
   (threshold ``t``) among its neighbours and itself, and sends each neighbour its shares sealed with
   ChaCha20-Poly1305 under their channel agreement. The aggregator only relays ciphertexts.
3. **Masked input.** ``y_u = x_u + PRG(seed_u) + Σ_{v ∈ N(u)} ±PRG(s_uv)`` modulo 2^b, with ``s_uv`` the
   pairwise mask key (+ if u < v by name, − otherwise), over the neighbours whose shares reached u.
4. **Unmask.** Given the survivors (sent y) and the dropped (shared keys, sent no y), each site reveals,
   per neighbour, the seed share of a survivor or the mask-key share of a dropped site — never both for one
   peer, once per round, and only when at least ``t`` survived. The server removes every self mask and the
   pairwise masks that dropped sites left behind; what remains is Σ x_u.

Threat model: an honest-but-curious aggregator and up to t − 1 colluding parties learn nothing about one
site's x beyond the sum, the participants and who dropped. A malicious server that lies about dropouts
beyond the consistency checks here is out of scope.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from fedmedclip.secagg import aead, graph, keys, shamir
from fedmedclip.secagg.fixedpoint import add_mod, sub_mod
from fedmedclip.secagg.prg import mask_stream, modulus_mask


class SecAggError(ValueError):
    """A phase was asked for out of order, with inconsistent inputs, or with too few survivors."""


class SecretKind(Enum):
    SELF_SEED = "self_seed"
    MASK_KEY = "mask_key"


@dataclass(frozen=True)
class RoundParams:
    """What every party of one secure round agrees on; all of it is public."""

    run_id: str
    round: int
    threshold: int
    bits: int
    length: int  # coordinates in each masked vector
    degree: int | None = None  # None: all pairs (SecAgg); else the SecAgg+ graph degree
    graph_seed: bytes = b""

    def __post_init__(self) -> None:
        modulus_mask(self.bits)
        if self.threshold < 2:
            raise SecAggError("threshold must be at least 2")
        if self.length < 1:
            raise SecAggError("length must be >= 1")

    @property
    def context(self) -> bytes:
        return f"{self.run_id}|{self.round}".encode()


@dataclass(frozen=True)
class AdvertisedKeys:
    site: str
    channel_public: bytes
    mask_public: bytes


@dataclass(frozen=True)
class SealedShares:
    sender: str
    receiver: str
    ciphertext: bytes


@dataclass(frozen=True)
class RevealedShare:
    owner: str  # whose secret this is a share of
    kind: SecretKind
    share: shamir.Share


class Directory:
    """The advertised keys of a round, the public share index of each site, and the neighbour graph."""

    def __init__(self, params: RoundParams, advertised: Collection[AdvertisedKeys]) -> None:
        by_site = {item.site: item for item in advertised}
        if len(by_site) != len(advertised):
            raise SecAggError("a site advertised keys twice")
        if len(by_site) < params.threshold:
            raise SecAggError(f"{len(by_site)} sites advertised keys; the threshold is {params.threshold}")
        self.params = params
        self.keys = dict(sorted(by_site.items()))
        self.index = {site: position + 1 for position, site in enumerate(self.keys)}
        self.neighbours = graph.neighbours(list(self.keys), params.degree, params.graph_seed)
        smallest = min(len(linked) for linked in self.neighbours.values()) + 1
        if smallest < params.threshold:
            raise SecAggError(f"neighbourhoods of {smallest} sites cannot meet the threshold {params.threshold}")

    def pair_key(self, private_mask_key: bytes, peer: str) -> bytes:
        """The pairwise mask key between the owner of ``private_mask_key`` and ``peer``."""
        return keys.agree(private_mask_key, self.keys[peer].mask_public, keys.PURPOSE_MASK, self.params.context)


def _share_ad(params: RoundParams, sender: str, receiver: str) -> bytes:
    return params.context + f"|{sender}->{receiver}".encode()


def _pair_mask(params: RoundParams, key: bytes) -> np.ndarray:
    return mask_stream(key, params.length, params.bits)


def _self_mask(params: RoundParams, seed: bytes) -> np.ndarray:
    return mask_stream(keys.derive(seed, keys.PURPOSE_SELF_MASK, params.context), params.length, params.bits)


@dataclass
class SecAggClient:
    """One site's side of one round. Secrets live only in this object, which is dropped after the round."""

    site: str
    # The round's parameters; a site may advertise before they are fixed (the threshold and modulus depend on
    # how many sites advertised) and pass them to ``share_keys``.
    params: RoundParams | None = None
    _channel: keys.KeyPair = field(default_factory=keys.KeyPair.generate, repr=False)
    _mask: keys.KeyPair = field(default_factory=keys.KeyPair.generate, repr=False)
    _seed: bytes = field(default_factory=lambda: secrets.token_bytes(keys.KEY_BYTES), repr=False)
    _directory: Directory | None = field(default=None, repr=False)
    _held: dict[str, tuple[shamir.Share, shamir.Share]] = field(default_factory=dict, repr=False)
    _masked_with: frozenset[str] | None = None
    _revealed: bool = False

    def advertise(self) -> AdvertisedKeys:
        return AdvertisedKeys(self.site, self._channel.public, self._mask.public)

    def share_keys(
        self, advertised: Collection[AdvertisedKeys], params: RoundParams | None = None
    ) -> list[SealedShares]:
        if self._directory is not None:
            raise SecAggError("keys were already shared this round")
        if params is not None:
            if self.params is not None and params != self.params:
                raise SecAggError("the round's parameters changed after this site advertised")
            self.params = params
        if self.params is None:
            raise SecAggError("the round's parameters are unknown")
        directory = Directory(self.params, advertised)
        if directory.keys.get(self.site) != self.advertise():
            raise SecAggError("the key directory does not hold this site's own keys")
        self._directory = directory
        holders = sorted(directory.neighbours[self.site] | {self.site})
        xs = [directory.index[holder] for holder in holders]
        mask_shares = shamir.split(self._mask.private, directory.params.threshold, xs)
        seed_shares = shamir.split(self._seed, directory.params.threshold, xs)
        sealed = []
        for holder, mask_share, seed_share in zip(holders, mask_shares, seed_shares, strict=True):
            if holder == self.site:
                self._held[self.site] = (mask_share, seed_share)
                continue
            key = self._channel_key(directory, holder)
            plaintext = mask_share.to_bytes() + seed_share.to_bytes()
            sealed.append(
                SealedShares(
                    self.site, holder, aead.seal(key, plaintext, _share_ad(directory.params, self.site, holder))
                )
            )
        return sealed

    def masked_input(self, received: Sequence[SealedShares], encoded: np.ndarray) -> np.ndarray:
        """``encoded`` (residues modulo 2^bits, from ``FixedPoint.encode``) under every mask of this site."""
        directory = self._require_directory()
        params = directory.params
        if self._masked_with is not None:
            raise SecAggError("masked input was already produced this round")
        if encoded.shape != (params.length,):
            raise SecAggError(f"expected {params.length} coordinates, got {encoded.shape}")
        senders = set()
        for item in received:
            if item.receiver != self.site or item.sender not in directory.neighbours[self.site]:
                raise SecAggError(f"shares from {item.sender!r} to {item.receiver!r} are not for this site")
            if item.sender in senders:
                raise SecAggError(f"two sets of shares from {item.sender!r}")
            key = self._channel_key(directory, item.sender)
            plaintext = aead.open_sealed(key, item.ciphertext, _share_ad(params, item.sender, self.site))
            half = len(plaintext) // 2
            self._held[item.sender] = (
                shamir.Share.from_bytes(plaintext[:half]),
                shamir.Share.from_bytes(plaintext[half:]),
            )
            senders.add(item.sender)
        masked = add_mod(encoded, _self_mask(params, self._seed), params.bits)
        for peer in sorted(senders):
            stream = _pair_mask(params, directory.pair_key(self._mask.private, peer))
            masked = add_mod(masked, stream, params.bits) if self.site < peer else sub_mod(masked, stream, params.bits)
        self._masked_with = frozenset(senders)
        return masked

    def unmask(self, survivors: Collection[str], dropped: Collection[str]) -> list[RevealedShare]:
        """The shares the server needs, after checking its claim is consistent with what this site saw."""
        if self._masked_with is None:
            raise SecAggError("unmask before masked input")
        if self._revealed:
            raise SecAggError("shares were already revealed this round; a second request is refused")
        threshold = self._require_directory().params.threshold
        alive, gone = set(survivors), set(dropped)
        if len(alive) < threshold:
            raise SecAggError(f"only {len(alive)} survivors; the threshold is {threshold}")
        if alive & gone:
            raise SecAggError("a site cannot both survive and drop")
        if self.site not in alive:
            raise SecAggError("this site is not among the claimed survivors")
        peers = self._masked_with
        if (alive | gone) & peers != peers:
            raise SecAggError("the claimed survivor and dropout sets omit a neighbour that shared keys")
        self._revealed = True
        revealed = []
        for owner in sorted(peers | {self.site}):
            mask_share, seed_share = self._held[owner]
            if owner in alive:
                revealed.append(RevealedShare(owner, SecretKind.SELF_SEED, seed_share))
            else:
                revealed.append(RevealedShare(owner, SecretKind.MASK_KEY, mask_share))
        return revealed

    def _channel_key(self, directory: Directory, peer: str) -> bytes:
        peer_public = directory.keys[peer].channel_public
        return keys.agree(self._channel.private, peer_public, keys.PURPOSE_SHARES, directory.params.context)

    def _require_directory(self) -> Directory:
        if self._directory is None:
            raise SecAggError("keys have not been shared yet")
        return self._directory


def unmask_sum(
    directory: Directory,
    shared: Mapping[str, Collection[str]],
    masked: Mapping[str, np.ndarray],
    revealed: Mapping[str, Sequence[RevealedShare]],
) -> np.ndarray:
    """Σ x_u over the sites in ``masked``, modulo 2^bits.

    ``shared[u]`` is the set of peers whose shares the server relayed to u (so u masked with exactly them);
    ``revealed[w]`` is what survivor w revealed. Raises ``SecAggError`` when some secret has fewer than
    ``threshold`` shares: the sum cannot be recovered, and nothing else is either.
    """
    params = directory.params
    survivors = set(masked)
    if len(survivors) < params.threshold:
        raise SecAggError(f"only {len(survivors)} masked inputs; the threshold is {params.threshold}")
    dropped = set().union(*(set(peers) for peers in shared.values())) - survivors
    pools: dict[tuple[str, SecretKind], list[shamir.Share]] = {}
    for revealer, items in revealed.items():
        if revealer not in survivors:
            continue
        for item in items:
            expected = SecretKind.SELF_SEED if item.owner in survivors else SecretKind.MASK_KEY
            if item.kind is expected:
                pools.setdefault((item.owner, item.kind), []).append(item.share)

    def recover(owner: str, kind: SecretKind) -> bytes:
        found = pools.get((owner, kind), [])
        if len(found) < params.threshold:
            raise SecAggError(f"{len(found)} shares of {owner!r}'s {kind.value}; the threshold is {params.threshold}")
        return shamir.combine(found, params.threshold, keys.KEY_BYTES)

    total = np.zeros(params.length, dtype=np.uint64)
    for site in sorted(survivors):
        total = add_mod(total, masked[site], params.bits)
    for site in sorted(survivors):
        total = sub_mod(total, _self_mask(params, recover(site, SecretKind.SELF_SEED)), params.bits)
    for gone in sorted(dropped):
        private = recover(gone, SecretKind.MASK_KEY)
        for site in sorted(survivors):
            if gone not in shared.get(site, ()):
                continue
            stream = _pair_mask(params, directory.pair_key(private, site))
            # ``site`` added +stream if site < gone, else −stream; undo exactly that.
            total = sub_mod(total, stream, params.bits) if site < gone else add_mod(total, stream, params.bits)
    return total
