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
from fedmedclip.simulation.vectorised import initial_heads, train_shard_round, unstack_state

Status = Literal["train", "drop", "straggle"]


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
    state_bytes: int  # embeddings, heads and residuals held between rounds
    peak_rss_bytes: int  # of the process running the shard (shared by all shards under backend: local)


def shard_state_bytes(config: SimulateConfig, num_sites: int, dim: int, num_classes: int) -> int:
    """Bytes a shard holds between rounds: the bound checked before anything is allocated."""
    hidden = config.train_config().head_hidden
    head = dim * hidden + 2 * hidden * hidden + hidden * num_classes  # weights
    head += 3 * (2 * hidden + 3 * hidden) + 2 * num_classes  # biases, kappas, BatchNorm affine and stats
    residual = sum(int(torch.Size(shape).numel()) for shape in fam_shapes(dim).values())
    samples = config.sites.train_samples + config.sites.eval_samples
    data = samples * (dim * 4 + 8)
    return num_sites * (4 * head + 4 * residual + data)


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
        seeds = [site_seed(config, site) for site in sites]
        # A site's first round starts from build_head(seed), exactly what train_local_round does for head=None.
        self.heads = {
            k: v.to(self.device)
            for k, v in initial_heads(dim, num_classes, seeds, self.train_config.head_hidden).items()
        }
        # Zero residuals encode exactly like "no residual": delta + 0 is delta, bit for bit.
        self.residuals = {name: torch.zeros(len(sites), *shape) for name, shape in fam_shapes(dim).items()}

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
            {name: tensor[rows] for name, tensor in self.heads.items()},
            logit_scale=self.config.logit_scale,
            seeds=[site_seed(self.config, site) for site, _ in working],
            config=self.train_config,
            round_index=round_index,
        )
        for name, tensor in result.head.items():
            self.heads[name][rows] = tensor
        codec = self.config.codec.to_codec()
        new_fams = {name: tensor.cpu() for name, tensor in result.fam.items()}  # the codec works on the CPU

        def encode(slot: int) -> EncodedUpdate:
            local = unstack_state(new_fams, slot)
            position = self.position[working[slot][0]]
            residual = {name: tensor[position] for name, tensor in self.residuals.items()}
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
            position = self.position[site]
            for name, tensor in encoded.residual.items():
                self.residuals[name][position] = tensor
            report.uploads.append(Upload(site, result.num_samples, encoded.payload, encoded.sha256))
        report.seconds = time.perf_counter() - started
        return report

    @torch.no_grad()
    def evaluate(self, global_fam: Mapping[str, torch.Tensor]) -> dict[int, dict[str, float]]:
        """Each site's accuracy on its evaluation split with the global FAM and its own head (eval mode)."""
        features, labels = self.data.eval_features, self.data.eval_labels
        num_sites, count, dim = features.shape
        num_classes = self.data.prototypes.shape[0]
        fam = build_fam(dim, dict(global_fam)).to(self.device).eval()
        adapted = fam(features.reshape(-1, dim)).reshape(num_sites, count, dim)
        head = build_head(dim, num_classes, hidden=self.train_config.head_hidden).to(self.device).eval()
        logits = vmap(lambda tensors, x: functional_call(head, tensors, (x,)))(self.heads, adapted)
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
        return {site: {key: rates[key][i] for key in rates} for i, site in enumerate(self.data.sites)}

    def memory(self) -> ShardMemory:
        held = self.data.nbytes()
        held += sum(t.numel() * t.element_size() for t in (*self.heads.values(), *self.residuals.values()))
        # ru_maxrss is KiB on Linux, bytes on macOS.
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        return ShardMemory(self.shard, len(self.data.sites), held, rss)
