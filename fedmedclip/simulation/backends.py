"""Where the shards live: in this process (``local``) or one Ray actor per shard (``ray``).

Both backends run the same ``Shard`` code on the same per-shard data, so one seed gives one result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from fedmedclip.simulation.config import EmbeddingSites, SimulateConfig
from fedmedclip.simulation.shard import Shard, ShardMemory, ShardRoundReport, Status
from fedmedclip.simulation.sites import load_pool

Assignments = Mapping[int, Sequence[tuple[int, Status]]]  # shard -> (site, status)


class Backend(Protocol):
    def run_round(
        self, global_fam: Mapping[str, torch.Tensor], round_index: int, assignments: Assignments
    ) -> list[ShardRoundReport]: ...

    def evaluate(self, global_fam: Mapping[str, torch.Tensor]) -> dict[int, dict[str, float]]: ...

    def memory(self) -> list[ShardMemory]: ...

    def close(self) -> None: ...


class LocalBackend:
    """Every shard in this process, one after another."""

    def __init__(self, config: SimulateConfig) -> None:
        source = config.sites.data
        pool = load_pool(source) if isinstance(source, EmbeddingSites) else None
        self.shards = [Shard(config, index, pool) for index in range(config.num_shards)]

    def run_round(
        self, global_fam: Mapping[str, torch.Tensor], round_index: int, assignments: Assignments
    ) -> list[ShardRoundReport]:
        return [self.shards[s].run_round(global_fam, round_index, a) for s, a in sorted(assignments.items()) if a]

    def evaluate(self, global_fam: Mapping[str, torch.Tensor]) -> dict[int, dict[str, float]]:
        merged: dict[int, dict[str, float]] = {}
        for shard in self.shards:
            merged.update(shard.evaluate(global_fam))
        return merged

    def memory(self) -> list[ShardMemory]:
        return [shard.memory() for shard in self.shards]

    def close(self) -> None:
        for shard in self.shards:
            shard.close()
        self.shards.clear()


class _ShardActor:
    """The body of a Ray actor: builds its shard (data included) inside the actor process."""

    def __init__(self, config_json: str, shard: int) -> None:
        config = SimulateConfig.model_validate_json(config_json)
        source = config.sites.data
        pool = load_pool(source) if isinstance(source, EmbeddingSites) else None
        self.shard = Shard(config, shard, pool)

    def run_round(
        self, global_fam: dict[str, torch.Tensor], round_index: int, assignments: list[tuple[int, Status]]
    ) -> ShardRoundReport:
        return self.shard.run_round(global_fam, round_index, assignments)

    def evaluate(self, global_fam: dict[str, torch.Tensor]) -> dict[int, dict[str, float]]:
        return self.shard.evaluate(global_fam)

    def memory(self) -> ShardMemory:
        return self.shard.memory()

    def close(self) -> None:
        self.shard.close()


class RayBackend:
    """One actor per shard; the driver sends the global FAM (one object per round) and receives payloads."""

    def __init__(self, config: SimulateConfig) -> None:
        try:
            import ray
        except ImportError as error:
            raise ValueError("backend: ray needs Ray: pip install 'fedmedclip[ray]'") from error
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            init_args: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if config.ray.address:
                init_args["address"] = config.ray.address
            else:
                init_args["num_cpus"] = max(1, int(config.num_shards * config.ray.cpus_per_actor + 0.999))
            ray.init(**init_args)
            self._started = True
        actor_class = ray.remote(_ShardActor)
        options: dict[str, Any] = {"num_cpus": config.ray.cpus_per_actor, "num_gpus": config.ray.gpus_per_actor}
        self.actors: list[Any] = [
            actor_class.options(**options).remote(config.model_dump_json(), index) for index in range(config.num_shards)
        ]
        # Wait until every actor has built its shard: errors (a memory bound, a missing file) surface here, and
        # round timings then measure rounds, not actor start-up.
        try:
            self._ray.get([actor.memory.remote() for actor in self.actors])
        except Exception:
            self.close()
            raise

    def run_round(
        self, global_fam: Mapping[str, torch.Tensor], round_index: int, assignments: Assignments
    ) -> list[ShardRoundReport]:
        state = self._ray.put(dict(global_fam))  # one copy in the object store, shared by every actor
        pending = [
            self.actors[s].run_round.remote(state, round_index, list(a)) for s, a in sorted(assignments.items()) if a
        ]
        reports: list[ShardRoundReport] = self._ray.get(pending)
        return reports

    def evaluate(self, global_fam: Mapping[str, torch.Tensor]) -> dict[int, dict[str, float]]:
        state = self._ray.put(dict(global_fam))
        merged: dict[int, dict[str, float]] = {}
        for part in self._ray.get([actor.evaluate.remote(state) for actor in self.actors]):
            merged.update(part)
        return merged

    def memory(self) -> list[ShardMemory]:
        memories: list[ShardMemory] = self._ray.get([actor.memory.remote() for actor in self.actors])
        return memories

    def close(self) -> None:
        # Let each actor delete its state files before it goes; a dead actor has nothing left to close.
        with contextlib.suppress(self._ray.exceptions.RayError):
            self._ray.get([actor.close.remote() for actor in self.actors], timeout=60)
        for actor in self.actors:
            self._ray.kill(actor)
        self.actors = []
        if self._started:
            self._ray.shutdown()


def make_backend(config: SimulateConfig) -> Backend:
    return RayBackend(config) if config.backend == "ray" else LocalBackend(config)
