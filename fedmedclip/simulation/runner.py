"""The simulation driver: choose participants, run shards, aggregate with the aggregator's own function."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from fedmedclip.federation.aggregate import SiteUpdate, aggregate
from fedmedclip.federation.codec import decode_update
from fedmedclip.model.fam import build_fam, fam_state
from fedmedclip.simulation.backends import Assignments, make_backend
from fedmedclip.simulation.config import EmbeddingSites, SimulateConfig
from fedmedclip.simulation.shard import ShardMemory, Status
from fedmedclip.simulation.sites import site_name

ACCURACY_KEYS = ("ensemble_acc", "zero_shot_acc", "head_acc")


@dataclass
class RoundSummary:
    round: int  # 1-based
    asked: int
    trained: int
    dropped: int
    stragglers: int
    aggregated: int
    upload_bytes: int  # payloads that reached the aggregator this round
    late_bytes: int  # stragglers' payloads, refused
    seconds: float
    site_rounds_per_s: float
    train_loss: float | None
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # key -> spread over sites (when evaluated)


@dataclass
class SimulationOutcome:
    config: SimulateConfig
    rounds: list[RoundSummary]
    final_site_accuracy: dict[str, float]  # site -> ensemble accuracy after the last round
    global_fam: dict[str, torch.Tensor]
    memory: list[ShardMemory]
    wall_seconds: float
    machine: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.config.name,
            "config": self.config.model_dump(mode="json"),
            "machine": self.machine,
            "wall_seconds": self.wall_seconds,
            "site_rounds": sum(r.trained for r in self.rounds),
            "site_rounds_per_s": sum(r.trained for r in self.rounds) / max(self.wall_seconds, 1e-9),
            "rounds": [asdict(r) for r in self.rounds],
            "final_site_accuracy": self.final_site_accuracy,
            "memory": [asdict(m) for m in self.memory],
        }


def spread(values: list[float]) -> dict[str, float]:
    """Mean, standard deviation and quantiles over sites."""
    array = np.asarray(values, dtype=np.float64)
    q = np.quantile(array, [0.0, 0.1, 0.5, 0.9, 1.0])
    return {
        "mean": float(array.mean()),
        "std": float(array.std()),
        "min": float(q[0]),
        "p10": float(q[1]),
        "median": float(q[2]),
        "p90": float(q[3]),
        "max": float(q[4]),
    }


def choose_sites(config: SimulateConfig, round_index: int) -> Assignments:
    """Who is asked this round and what happens to each: seeded by (seed, round), so backends agree."""
    rng = np.random.default_rng([config.seed, round_index])
    count = config.sites.count
    asked = np.sort(rng.choice(count, size=max(1, round(config.participation * count)), replace=False))
    draws = rng.random(asked.size)
    assignments: dict[int, list[tuple[int, Status]]] = {}
    for site, draw in zip(asked.tolist(), draws.tolist(), strict=True):
        status: Status = (
            "drop" if draw < config.dropout else "straggle" if draw < config.dropout + config.stragglers else "train"
        )
        assignments.setdefault(site // config.shard_size, []).append((site, status))
    return assignments


def embedding_dim(config: SimulateConfig) -> int:
    source = config.sites.data
    if isinstance(source, EmbeddingSites):
        try:
            with np.load(source.path) as archive:  # reads only this array, not the embeddings
                return int(archive["prototypes"].shape[1])
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"cannot read the prototypes of embeddings {source.path}: {error}") from error
    return source.dim


def run_simulation(config: SimulateConfig, on_round: Callable[[RoundSummary], None] | None = None) -> SimulationOutcome:
    started = time.perf_counter()
    dim = embedding_dim(config)
    global_fam = fam_state(build_fam(dim, seed=config.seed))
    backend = make_backend(config)
    rounds: list[RoundSummary] = []
    final: dict[int, dict[str, float]] = {}
    try:
        for round_index in range(config.rounds):
            round_started = time.perf_counter()
            assignments = choose_sites(config, round_index)
            reports = backend.run_round(global_fam, round_index, assignments)
            # What the aggregator does with each upload: check and decode the payload, then average.
            updates = [
                SiteUpdate(site_name(u.site), u.num_samples, decode_update(u.payload, u.sha256))
                for report in reports
                for u in report.uploads
            ]
            if updates:
                global_fam = aggregate(global_fam, updates, weighting=config.weighting)
            statuses = [status for part in assignments.values() for _, status in part]
            losses = [m["loss"] for report in reports for m in report.train_metrics.values()]
            seconds = time.perf_counter() - round_started
            trained = statuses.count("train") + statuses.count("straggle")
            summary = RoundSummary(
                round=round_index + 1,
                asked=len(statuses),
                trained=trained,
                dropped=statuses.count("drop"),
                stragglers=statuses.count("straggle"),
                aggregated=len(updates),
                upload_bytes=sum(len(u.payload) for report in reports for u in report.uploads),
                late_bytes=sum(report.late_bytes for report in reports),
                seconds=seconds,
                site_rounds_per_s=trained / max(seconds, 1e-9),
                train_loss=statistics.fmean(losses) if losses else None,
            )
            if (round_index + 1) % config.eval_every == 0 or round_index + 1 == config.rounds:
                final = backend.evaluate(global_fam)
                summary.accuracy = {key: spread([m[key] for m in final.values()]) for key in ACCURACY_KEYS}
            rounds.append(summary)
            if on_round is not None:
                on_round(summary)
        memory = backend.memory()
    finally:
        backend.close()
    return SimulationOutcome(
        config=config,
        rounds=rounds,
        final_site_accuracy={site_name(s): m["ensemble_acc"] for s, m in sorted(final.items())},
        global_fam=global_fam,
        memory=memory,
        wall_seconds=time.perf_counter() - started,
        machine=_machine(),
    )


def _machine() -> dict[str, Any]:
    import os
    import platform

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
    }
