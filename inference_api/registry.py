"""The model registry: which verified bundle each site serves, and the watcher that hot-swaps them.

Each scan reads every site's ``current`` pointer. When it names something new, the bundle is read, its
digests checked, its backbone compared with the loaded one, and a classifier built and smoke-tested — all
off the event loop — and only then swapped in. Swapping replaces one immutable snapshot with another, so a
request that already holds the old classifier finishes on it and no request is dropped. A bundle that
fails any check is refused and logged once; the previous one keeps serving, and it is retried only when
the pointer changes again (a new version, or the same one re-published).

Each site folder is scanned in its own thread with a timeout: a site whose ``current`` is a FIFO or sits on a
hung network mount blocks only itself. Its last good bundle keeps serving, its state says the scan is
blocked, and no second thread is started for it until the first one returns (so a stuck folder costs one
thread, not one per scan).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
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
_PARALLEL_LOADS = 4


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


class _SiteScan:
    """One site's scan in a daemon thread (daemon: a thread stuck in ``open()`` must not hold up exit)."""

    def __init__(self, scan: Callable[[SiteState], SiteState], state: SiteState) -> None:
        self.started = time.monotonic()
        self.result: SiteState | None = None
        self.error: BaseException | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(scan, state), name=f"scan-{state.name}", daemon=True)
        self._thread.start()

    def _run(self, scan: Callable[[SiteState], SiteState], state: SiteState) -> None:
        try:
            self.result = scan(state)
        except BaseException as error:  # reported by the scan that collects it
            self.error = error
        finally:
            self._done.set()

    def wait(self, timeout_s: float) -> bool:
        return self._done.wait(max(0.0, timeout_s))


class ModelRegistry:
    def __init__(
        self, root: Path, backbone: Backbone, metrics: ApiMetrics | None = None, *, site_timeout_s: float = 10.0
    ) -> None:
        self.root = root
        self.backbone = backbone
        self.metrics = metrics
        self.site_timeout_s = site_timeout_s
        self._sites: dict[str, SiteState] = {}
        self._pending: dict[str, _SiteScan] = {}  # scans that outlived their timeout, by site
        # Reading pointers is cheap and runs for every site at once; building classifiers is not, so at most a
        # few run together (many sites publishing at the same moment must not multiply peak memory).
        self._loading = threading.BoundedSemaphore(_PARALLEL_LOADS)

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
        """Look at every site folder once, each in its own thread, and load what changed; returns within
        about ``site_timeout_s``. Blocking: run it in a thread. Not reentrant (one watcher calls it)."""
        updated = dict(self._sites)
        scans: dict[str, _SiteScan] = {}
        for name in list_sites(self.root):
            state = updated.get(name) or SiteState(name)
            pending = self._pending.pop(name, None)
            scans[name] = pending or _SiteScan(self._scan_site, state)
        deadline = time.monotonic() + self.site_timeout_s
        for name, scan in scans.items():
            if not scan.wait(deadline - time.monotonic()):
                self._pending[name] = scan  # collected by a later scan once it returns
                updated[name] = self._blocked(updated.get(name) or SiteState(name), scan)
            elif scan.error is not None:
                log.error("site=%s bundle scan failed: %s", name, scan.error)
            elif scan.result is not None:
                updated[name] = scan.result
        self._sites = updated
        if self.metrics is not None:
            self.metrics.ready.set(1 if self.ready else 0)
            self.metrics.sites_ready.set(sum(1 for state in updated.values() if state.loaded is not None))
            self.metrics.blocked_scans.set(len(self._pending))

    def _blocked(self, state: SiteState, scan: _SiteScan) -> SiteState:
        waited = time.monotonic() - scan.started
        if state.error is None or not state.error.startswith("scan blocked"):  # logged once per episode
            log.error(
                "site=%s bundle folder scan blocked for %.0f s (a FIFO or a hung mount?); still serving version=%s",
                state.name,
                waited,
                _version(state),
            )
        return replace(state, error=f"scan blocked: the site folder has not answered for {waited:.0f} s")

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
            with self._loading:
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
            self.metrics.bundle_loads.labels("loaded").inc()
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
                self.metrics.bundle_loads.labels("refused").inc()
        return replace(state, pointer=version, error=f"version {version} refused: {reason}", _seen=seen)


def _version(state: SiteState) -> str | None:
    return state.loaded.bundle.version if state.loaded is not None else None
