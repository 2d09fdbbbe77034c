"""The model registry: which verified bundle each site serves, and the watcher that hot-swaps them.

Each scan reads every site's ``current`` pointer. When it names something new, the bundle is read, its
digests checked, its backbone compared with the loaded one, and a classifier built and smoke-tested — all
off the event loop — and only then swapped in. Swapping replaces one immutable snapshot with another, so a
request that already holds the old classifier finishes on it and no request is dropped. A bundle that
fails any check is refused and logged once; the previous one keeps serving, and it is retried only when
the pointer changes again (a new version, or the same one re-published).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from fedmedclip.bundle import (
    CURRENT_POINTER,
    Bundle,
    BundleError,
    check_compatible,
    current_version,
    list_sites,
    read_bundle,
)
from fedmedclip.model.backbone import Backbone
from fedmedclip.model.personalised import PersonalisedClassifier
from inference_api.metrics import ApiMetrics

log = logging.getLogger("inference_api.registry")


@dataclass(frozen=True)
class LoadedBundle:
    bundle: Bundle
    classifier: PersonalisedClassifier


@dataclass(frozen=True)
class SiteState:
    """A site as the registry last saw it. ``loaded`` is what answers; ``error`` the last refusal, if any."""

    name: str
    loaded: LoadedBundle | None = None
    pointer: str | None = None
    error: str | None = None
    _seen: tuple[str, int, int] | None = field(default=None, repr=False)  # pointer (text, mtime, inode)


class ModelRegistry:
    def __init__(self, root: Path, backbone: Backbone, metrics: ApiMetrics | None = None) -> None:
        self.root = root
        self.backbone = backbone
        self.metrics = metrics
        self._sites: dict[str, SiteState] = {}

    # Readers (request handlers on the event loop) only ever look up the current dict; scans build a new
    # dict and rebind it, so a reader never sees a half-updated registry.
    def get(self, site: str) -> SiteState | None:
        return self._sites.get(site)

    def sites(self) -> list[SiteState]:
        return [self._sites[name] for name in sorted(self._sites)]

    @property
    def ready(self) -> bool:
        return any(state.loaded is not None for state in self._sites.values())

    def scan(self) -> None:
        """Look at every site folder once and load what changed. Blocking: run it in a thread."""
        updated = dict(self._sites)
        for name in list_sites(self.root):
            updated[name] = self._scan_site(updated.get(name) or SiteState(name))
        self._sites = updated
        if self.metrics is not None:
            self.metrics.ready.set(1 if self.ready else 0)

    async def watch(self, interval_s: float) -> None:
        """Scan every ``interval_s`` seconds until cancelled; a failing scan is logged, never fatal."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await asyncio.to_thread(self.scan)
            except Exception:  # the watcher must outlive any surprise in one scan
                log.exception("bundle scan failed; will retry")

    def _scan_site(self, state: SiteState) -> SiteState:
        pointer_path = self.root / state.name / CURRENT_POINTER
        try:
            stat = os.stat(pointer_path)
        except FileNotFoundError:
            if state.loaded is not None and state._seen is not None:
                log.warning("site=%s current pointer removed; still serving version=%s", state.name, _version(state))
            return replace(state, pointer=None, _seen=None)
        except OSError as error:
            return replace(state, error=f"cannot stat the current pointer: {error.strerror}")
        try:
            version = current_version(self.root, state.name)
        except BundleError as error:
            return self._refuse(state, None, error.reason, (f"<bad:{stat.st_mtime_ns}>", stat.st_mtime_ns, 0))
        if version is None:
            return replace(state, pointer=None, _seen=None)
        seen = (version, stat.st_mtime_ns, stat.st_ino)
        if seen == state._seen:
            return state
        if state.loaded is not None and state.loaded.bundle.version == version:
            return replace(state, pointer=version, _seen=seen, error=None)
        try:
            loaded = self._load(state.name, version)
        except BundleError as error:
            return self._refuse(state, version, error.reason, seen)
        except Exception as error:  # anything unexpected refuses this version, never the other sites or the service
            return self._refuse(state, version, f"{error.__class__.__name__}: {error}", seen)
        previous = _version(state)
        log.info(
            "site=%s version=%s fam_version=%s bundle loaded (previous=%s)",
            state.name,
            version,
            loaded.bundle.fam_version,
            previous,
        )
        if self.metrics is not None:
            self.metrics.bundle_loads.labels(state.name, "loaded").inc()
            self.metrics.served_version(state.name, version, previous)
        return SiteState(state.name, loaded=loaded, pointer=version, error=None, _seen=seen)

    def _load(self, site: str, version: str) -> LoadedBundle:
        bundle = read_bundle(self.root / site / version)
        check_compatible(bundle, self.backbone)
        classifier = bundle.classifier(self.backbone.device)
        # One forward pass before it may answer anyone: catches what static checks cannot.
        probe = classifier.predict(torch.ones(2, bundle.backbone.embed_dim, device=self.backbone.device))
        if not bool(torch.isfinite(probe.probs).all()):
            raise BundleError(bundle.path or version, "the classifier produces non-finite probabilities")
        return LoadedBundle(bundle, classifier)

    def _refuse(self, state: SiteState, version: str | None, reason: str, seen: tuple[str, int, int]) -> SiteState:
        if seen != state._seen:  # log once per pointer change, not once per scan
            log.error(
                "site=%s version=%s bundle refused: %s; still serving version=%s",
                state.name,
                version,
                reason,
                _version(state),
            )
            if self.metrics is not None:
                self.metrics.bundle_loads.labels(state.name, "refused").inc()
        return replace(state, pointer=version, error=f"version {version} refused: {reason}", _seen=seen)


def _version(state: SiteState) -> str | None:
    return state.loaded.bundle.version if state.loaded is not None else None
