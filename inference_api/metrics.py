"""Prometheus metrics. Each app gets its own registry, so several apps in one process (tests) do not clash."""

from __future__ import annotations

import contextlib

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
        self.images = Counter("fedmedclip_api_images", "Images classified, by site.", ["site"], registry=self.registry)
        self.batch_images = Histogram(
            "fedmedclip_api_batch_images",
            "Images per backbone batch (micro-batching at work when > 1).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.bundle_loads = Counter(
            "fedmedclip_api_bundle_loads",
            "Bundle load attempts by site and outcome (loaded or refused).",
            ["site", "outcome"],
            registry=self.registry,
        )
        self.bundle_version = Gauge(
            "fedmedclip_api_bundle_info",
            "1 for the bundle version each site serves.",
            ["site", "version"],
            registry=self.registry,
        )
        self.ready = Gauge("fedmedclip_api_ready", "1 when the service can answer predictions.", registry=self.registry)

    def served_version(self, site: str, version: str, previous: str | None) -> None:
        if previous is not None and previous != version:
            with contextlib.suppress(KeyError):  # not exported yet
                self.bundle_version.remove(site, previous)
        self.bundle_version.labels(site, version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
