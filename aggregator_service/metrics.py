"""Prometheus metrics of one server instance, on its own registry (several servers may share a process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fedmedclip.federation.messages import RoundState

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_SLOW = (0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        prefix = "fedmedclip_aggregator"
        self.rpcs = Counter(
            f"{prefix}_rpcs", "RPCs served, by method and status code.", ["method", "code"], registry=self.registry
        )
        self.updates = Counter(
            f"{prefix}_updates", "Update submissions, by outcome.", ["outcome"], registry=self.registry
        )
        self.update_bytes = Counter(
            f"{prefix}_update_bytes", "Payload bytes of accepted updates.", registry=self.registry
        )
        self.model_bytes = Counter(
            f"{prefix}_model_bytes_sent", "FAM bytes sent by GetModel and ExportVersion.", registry=self.registry
        )
        self.validation_seconds = Histogram(
            f"{prefix}_update_validation_seconds",
            "Decode and validation time of one update payload.",
            buckets=_FAST,
            registry=self.registry,
        )
        self.validation_cpu_seconds = Histogram(
            f"{prefix}_update_validation_cpu_seconds",
            "CPU time of the thread decoding and validating one update payload.",
            buckets=_FAST,
            registry=self.registry,
        )
        self.aggregation_seconds = Histogram(
            f"{prefix}_aggregation_seconds",
            "Aggregation of a round's updates into the next FAM.",
            buckets=_SLOW,
            registry=self.registry,
        )
        self.round_close_seconds = Histogram(
            f"{prefix}_round_close_seconds",
            "From the round's last accepted update to its new FAM version committed.",
            buckets=_SLOW,
            registry=self.registry,
        )
        self.round_close_cpu_seconds = Histogram(
            f"{prefix}_round_close_cpu_seconds",
            "CPU time the round engine spent aggregating and committing a round (excludes waiting).",
            buckets=_SLOW,
            registry=self.registry,
        )
        self.rounds = Counter(
            f"{prefix}_rounds_finished", "Rounds finished, by final state.", ["state"], registry=self.registry
        )
        self.current_round = Gauge(
            f"{prefix}_current_round", "Number of the active run's current round.", registry=self.registry
        )
        self.latest_version = Gauge(f"{prefix}_latest_version", "Newest committed FAM version.", registry=self.registry)


def record_round_closed(
    metrics: Metrics,
    *,
    aggregation_s: float,
    close_cpu_s: float,
    version: int,
    next_round: int | None,
    close_s: float | None = None,
) -> None:
    """What a committed round adds to the metrics, plain or secure (``next_round`` None: the run ended)."""
    metrics.aggregation_seconds.observe(aggregation_s)
    if close_s is not None:
        metrics.round_close_seconds.observe(close_s)
    metrics.round_close_cpu_seconds.observe(close_cpu_s)
    metrics.rounds.labels(RoundState.CLOSED.value).inc()
    metrics.latest_version.set(version)
    if next_round is not None:
        metrics.current_round.set(next_round)
