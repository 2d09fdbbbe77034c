"""Prometheus metrics. Each app gets its own registry, so several apps in one process (tests) do not clash.

``/metrics`` needs no key, so nothing here carries a site's name: a key must learn nothing about sites
outside its scope (docs/design.md §6). What each site serves is in the log ("bundle loaded" lines) and in
``GET /v1/sites`` for a key that may see it; the numbers here are totals, as ``/readyz`` already shows.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ApiMetrics"]


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fedmedclip_api_requests",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fedmedclip_api_request_seconds",
            "Request latency by route template.",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.images = Counter("fedmedclip_api_images", "Images classified, all sites together.", registry=self.registry)
        self.batch_images = Histogram(
            "fedmedclip_api_batch_images",
            "Images per backbone batch (micro-batching at work when > 1).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.bundle_loads = Counter(
            "fedmedclip_api_bundle_loads",
            "Bundle load attempts by outcome (loaded or refused), all sites together.",
            ["outcome"],
            registry=self.registry,
        )
        self.sites_ready = Gauge(
            "fedmedclip_api_sites_ready", "Sites serving a verified bundle.", registry=self.registry
        )
        self.blocked_scans = Gauge(
            "fedmedclip_api_blocked_scans",
            "Site folders whose last scan did not finish within the scan timeout.",
            registry=self.registry,
        )
        self.ready = Gauge("fedmedclip_api_ready", "1 when the service can answer predictions.", registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
