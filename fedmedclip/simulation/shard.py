"""A shard of simulated sites: its data, heads and codec residuals, one vectorised round at a time.

The same class runs in the driver process (``backend: local``) and inside a Ray actor (``backend: ray``).
Only FAM states go in and encoded payloads come out, exactly what crosses the wire between a real agent and
the aggregator; embeddings, heads and residuals stay in the shard.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch.func import functional_call, vmap

from fedmedclip.federation.codec import EncodedUpdate, encode_update
from fedmedclip.federation.delta import alive_rows_of_state, fam_delta
from fedmedclip.model.ensemble import ensemble
from fedmedclip.model.fam import build_fam, fam_shapes
from fedmedclip.model.head import build_head
from fedmedclip.simulation.config import SimulateConfig
from fedmedclip.simulation.sites import Pool, ShardData, build_shard, site_seed
from fedmedclip.simulation.state import SiteStateStore
from fedmedclip.simulation.vectorised import initial_heads, train_shard_round, unstack_state

Status = Literal["train", "drop", "straggle"]
EVAL_CHUNK = 32  # sites evaluated at once


@dataclass(frozen=True)
class Upload:
    site: int
    num_samples: int
    payload: bytes
    sha256: str


@dataclass
class ShardRoundReport:
    uploads: list[Upload] = field(default_factory=list)
    late_bytes: int = 0  # stragglers' payloads, encoded but arriving after the round closed
    train_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class ShardMemory:
    shard: int
    sites: int
    state_bytes: int  # embeddings, and the heads and residuals of sites that have trained, held in memory
    peak_rss_bytes: int  # of the process running the shard (shared by all shards under backend: local)
    sites_with_state: int = 0  # sites holding a head (they have trained at least once)
    disk_bytes: int = 0  # heads and residuals kept in files (state_dir set)


def site_state_bytes(config: SimulateConfig, dim: int, num_classes: int) -> tuple[int, int]:
    """(data, head + residual) bytes of one site: its embeddings, and what it keeps once it has trained."""
    hidden = config.train_config().head_hidden
    head = dim * hidden + 2 * hidden * hidden + hidden * num_classes  # weights
    head += 3 * (2 * hidden + 3 * hidden) + 2 * num_classes  # biases, kappas, BatchNorm affine and stats
    residual = sum(int(torch.Size(shape).numel()) for shape in fam_shapes(dim).values())
    samples = config.sites.train_samples + config.sites.eval_samples
    return samples * (dim * 4 + 8), 4 * (head + residual)


def shard_state_bytes(config: SimulateConfig, num_sites: int, dim: int, num_classes: int) -> int:
    """The most bytes a shard holds in memory between rounds (every site trained): checked before allocating."""
    data, trained = site_state_bytes(config, dim, num_classes)
    return num_sites * (data + (0 if config.state_dir is not None else trained))


class Shard:
    def __init__(self, config: SimulateConfig, shard: int, pool: Pool | None = None) -> None:
        if config.threads:
            torch.set_num_threads(config.threads)
        self.config = config
        self.shard = shard
        self.train_config = config.train_config()
        self.device = torch.device(config.device)
        sites = list(config.shard_sites(shard))
        data = build_shard(config, sites, pool)
        num_classes, dim = data.prototypes.shape
        expected = shard_state_bytes(config, len(sites), dim, num_classes)
        limit = int(config.max_shard_memory_mb * 2**20)
        if expected > limit:
            raise ValueError(
                f"shard {shard} would hold {expected / 2**20:.0f} MiB for {len(sites)} sites, above "
                f"max_shard_memory_mb={config.max_shard_memory_mb:g}; lower shard_size or raise the bound"
            )
        self.data = ShardData(
            data.sites,
            data.train_features.to(self.device),
            data.train_labels.to(self.device),
            data.eval_features.to(self.device),
            data.eval_labels.to(self.device),
            data.prototypes.to(self.device),
        )
        self.position = {site: i for i, site in enumerate(sites)}
        # Only sites that have trained hold a head and a residual (see state.py).
        directory = None if config.state_dir is None else config.state_dir / f"shard-{shard:05d}"
        self.heads = SiteStateStore("head", directory)
        self.residuals = SiteStateStore("residual", directory)

    def _stacked_heads(self, sites: Sequence[int]) -> dict[str, torch.Tensor]:
        """The sites' heads, stacked on the device; a site's first head is ``build_head`` with its seed,
        exactly what ``train_local_round`` starts from for ``head=None``."""
        num_classes, dim = self.data.prototypes.shape
        states: list[Mapping[str, torch.Tensor] | None] = [self.heads.get(site) for site in sites]
        fresh = [i for i, state in enumerate(states) if state is None]
        if fresh:
            seeds = [site_seed(self.config, sites[i]) for i in fresh]
            built = initial_heads(dim, num_classes, seeds, self.train_config.head_hidden)
            for slot, i in enumerate(fresh):
                states[i] = {name: tensor[slot] for name, tensor in built.items()}
        ready = [state for state in states if state is not None]
        return {name: torch.stack([state[name] for state in ready]).to(self.device) for name in ready[0]}

    def run_round(
        self, global_fam: Mapping[str, torch.Tensor], round_index: int, assignments: Sequence[tuple[int, Status]]
    ) -> ShardRoundReport:
        started = time.perf_counter()
        report = ShardRoundReport()
        working = [(site, status) for site, status in assignments if status != "drop"]
        if not working:
            return report
        rows = torch.tensor([self.position[site] for site, _ in working], device=self.device)
        result = train_shard_round(
            self.data.train_features[rows],
            self.data.train_labels[rows],
            self.data.prototypes,
            global_fam,
            self._stacked_heads([site for site, _ in working]),
            logit_scale=self.config.logit_scale,
            seeds=[site_seed(self.config, site) for site, _ in working],
            config=self.train_config,
            round_index=round_index,
        )
        for slot, (site, _) in enumerate(working):
            self.heads.put(site, {name: tensor[slot] for name, tensor in result.head.items()})
        codec = self.config.codec.to_codec()
        new_fams = {name: tensor.cpu() for name, tensor in result.fam.items()}  # the codec works on the CPU

        def encode(slot: int) -> EncodedUpdate:
            local = unstack_state(new_fams, slot)
            # A site that never uploaded has no residual yet, as a real agent's first round.
            residual = self.residuals.get(working[slot][0])
            return encode_update(fam_delta(local, global_fam), alive_rows_of_state(local), residual, codec)

        slots = range(len(working))
        if self.config.codec_threads > 1:  # sites encode independently; torch and zstd release the GIL
            with ThreadPoolExecutor(self.config.codec_threads) as pool:
                encoded_all = list(pool.map(encode, slots))
        else:
            encoded_all = [encode(slot) for slot in slots]
        for slot, ((site, status), encoded) in enumerate(zip(working, encoded_all, strict=True)):
            report.train_metrics[site] = result.metrics[slot]
            if status == "straggle":
                # The upload arrives after the round closed and is refused; the agent keeps its residual
                # as it was, so the error feedback resends the same information next time.
                report.late_bytes += len(encoded.payload)
                continue
            self.residuals.put(site, encoded.residual)
            report.uploads.append(Upload(site, result.num_samples, encoded.payload, encoded.sha256))
        report.seconds = time.perf_counter() - started
        return report

    @torch.no_grad()
    def evaluate(self, global_fam: Mapping[str, torch.Tensor]) -> dict[int, dict[str, float]]:
        """Each site's accuracy on its evaluation split with the global FAM and its own head (eval mode).

        Sites go EVAL_CHUNK at a time, so the stacked heads (a site that never trained gets its seeded
        first head) stay bounded however large the shard."""
        num_classes, dim = self.data.prototypes.shape
        fam = build_fam(dim, dict(global_fam)).to(self.device).eval()
        head = build_head(dim, num_classes, hidden=self.train_config.head_hidden).to(self.device).eval()
        results: dict[int, dict[str, float]] = {}
        for start in range(0, len(self.data.sites), EVAL_CHUNK):
            chunk = slice(start, start + EVAL_CHUNK)
            sites = self.data.sites[chunk]
            features, labels = self.data.eval_features[chunk], self.data.eval_labels[chunk]
            num_sites, count, _ = features.shape
            adapted = fam(features.reshape(-1, dim)).reshape(num_sites, count, dim)
            heads = self._stacked_heads(sites)
            logits = vmap(lambda tensors, x: functional_call(head, tensors, (x,)))(heads, adapted)
            output = ensemble(
                adapted.reshape(-1, dim), self.data.prototypes, self.config.logit_scale, logits.reshape(-1, num_classes)
            )
            flat = labels.reshape(-1)
            hits = {
                "ensemble_acc": output.predictions == flat,
                "zero_shot_acc": output.zero_shot.argmax(dim=-1) == flat,
                "head_acc": logits.reshape(-1, num_classes).argmax(dim=-1) == flat,
            }
            rates = {key: value.reshape(num_sites, count).float().mean(dim=1).tolist() for key, value in hits.items()}
            results.update({site: {key: rates[key][i] for key in rates} for i, site in enumerate(sites)})
        return results

    def close(self) -> None:
        self.heads.close()
        self.residuals.close()

    def memory(self) -> ShardMemory:
        held = self.data.nbytes() + self.heads.memory_bytes() + self.residuals.memory_bytes()
        # ru_maxrss is KiB on Linux, bytes on macOS.
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        disk = self.heads.disk_bytes() + self.residuals.disk_bytes()
        return ShardMemory(self.shard, len(self.data.sites), held, rss, len(self.heads), disk)
