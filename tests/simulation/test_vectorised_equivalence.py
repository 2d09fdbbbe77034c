"""A vectorised round for 8 sites equals 8 runs of the real ``train_local_round`` followed by the real codec."""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from fedmedclip.federation.codec import CodecConfig, decode_update, encode_update
from fedmedclip.federation.delta import alive_rows_of_state, fam_delta
from fedmedclip.model.fam import build_fam, fam_state
from fedmedclip.simulation.vectorised import stack_states, train_shard_round, unstack_state
from fedmedclip.training.config import TrainConfig
from fedmedclip.training.local_round import train_local_round

SITES, SAMPLES, DIM, CLASSES = 8, 40, 64, 4
CONFIG = TrainConfig(batch_size=16, head_hidden=32, local_epochs=2)
CODEC = CodecConfig(rho=0.25, quantization="int8", compression="zstd")
LOGIT_SCALE = 50.0
STEPS = 6  # 2 epochs of 3 batches
# ...and so is the running mean BatchNorm recalibrates from the outputs that carry that bias.
PRE_NORM_BIASES = {
    "body.0.bias",
    "body.3.bias",
    "body.6.bias",
    "body.1.running_mean",
    "body.4.running_mean",
    "body.7.running_mean",
}


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    prototypes = F.normalize(torch.randn(CLASSES, DIM, generator=generator), dim=-1)
    labels = torch.randint(0, CLASSES, (SITES, SAMPLES), generator=generator)
    features = F.normalize(prototypes[labels] + 0.8 * torch.randn(SITES, SAMPLES, DIM, generator=generator), dim=-1)
    return features, labels, prototypes


def _real_round(features, labels, prototypes, global_fam, heads, residuals, round_index):
    results, encoded = [], []
    for site in range(SITES):
        result = train_local_round(
            features[site],
            labels[site],
            prototypes,
            global_fam,
            heads[site] if heads else None,
            logit_scale=LOGIT_SCALE,
            config=CONFIG,
            round_index=round_index,
            seed=100 + site,
        )
        results.append(result)
        delta = fam_delta(result.fam_state, global_fam)
        encoded.append(encode_update(delta, alive_rows_of_state(result.fam_state), residuals[site], CODEC))
    return results, encoded


def _assert_same_payload(ours: bytes, theirs: bytes, step_tolerance: float) -> None:
    mine, real = decode_update(ours), decode_update(theirs)
    assert set(mine.tensors) == set(real.tensors)
    for name, tensor in real.tensors.items():
        other = mine.tensors[name]
        assert other.shape == tensor.shape
        if tensor.rows is None:
            assert other.rows is None
        else:
            assert other.rows is not None and np.array_equal(other.rows, tensor.rows), name
        torch.testing.assert_close(other.values, tensor.values, rtol=0, atol=step_tolerance)


def test_two_vectorised_rounds_match_eight_real_agents() -> None:
    features, labels, prototypes = _data()
    global_fam = fam_state(build_fam(DIM, seed=3))
    seeds = [100 + site for site in range(SITES)]
    real_heads: list[dict[str, torch.Tensor]] | None = None
    real_residuals: list[dict[str, torch.Tensor] | None] = [None] * SITES
    our_heads = None
    our_residuals: list[dict[str, torch.Tensor] | None] = [None] * SITES
    for round_index in range(2):  # the second round exercises carried heads and residuals
        results, real_encoded = _real_round(
            features, labels, prototypes, global_fam, real_heads, real_residuals, round_index
        )
        shard = train_shard_round(
            features,
            labels,
            prototypes,
            global_fam,
            our_heads,
            logit_scale=LOGIT_SCALE,
            seeds=seeds,
            config=CONFIG,
            round_index=round_index,
        )
        assert shard.num_samples == SAMPLES
        for site in range(SITES):
            ours = unstack_state(shard.fam, site)
            real_delta = fam_delta(results[site].fam_state, global_fam)
            our_delta = fam_delta(ours, global_fam)
            for name, tensor in real_delta.items():
                # The deltas themselves are ~1e-3; batched products round differently from addmm by an ulp.
                torch.testing.assert_close(our_delta[name], tensor, rtol=1e-4, atol=1e-6)
                assert float(tensor.abs().max()) > 1e-5  # the round really moved the FAM
            for name, tensor in results[site].head_state.items():
                # A bias right before BatchNorm gets a gradient of pure rounding noise, which AdamW turns
                # into full learning-rate steps; it cannot change any output, so only its bound is checked.
                atol = CONFIG.head_lr * 2 * STEPS if name in PRE_NORM_BIASES else 1e-4
                torch.testing.assert_close(shard.head[name][site], tensor, rtol=1e-3, atol=atol, msg=name)
            for key, value in results[site].metrics.items():
                assert abs(shard.metrics[site][key] - value) <= 1e-4 * max(1.0, abs(value)), key
            encoded = encode_update(our_delta, alive_rows_of_state(ours), our_residuals[site], CODEC)
            our_residuals[site] = encoded.residual
            # Same tensors, same rows chosen, same encodings; a value may land one int8 step away.
            step = max(float(t.abs().max()) for t in real_delta.values()) / 127 * 1.01
            _assert_same_payload(encoded.payload, real_encoded[site].payload, step)
            assert abs(len(encoded.payload) - len(real_encoded[site].payload)) <= 0.02 * len(real_encoded[site].payload)
        real_heads = [r.head_state for r in results]
        real_residuals = [e.residual for e in real_encoded]
        our_heads = shard.head
        assert stack_states(real_heads).keys() == our_heads.keys()


def test_first_round_without_heads_starts_from_each_sites_seeded_head() -> None:
    features, labels, prototypes = _data()
    global_fam = fam_state(build_fam(DIM, seed=3))
    one = train_shard_round(
        features[:2], labels[:2], prototypes, global_fam, None, logit_scale=LOGIT_SCALE, seeds=[1, 2], config=CONFIG
    )
    swapped = train_shard_round(
        features[:2].flip(0),
        labels[:2].flip(0),
        prototypes,
        global_fam,
        None,
        logit_scale=LOGIT_SCALE,
        seeds=[2, 1],
        config=CONFIG,
    )
    for name in one.fam:
        torch.testing.assert_close(one.fam[name][0], swapped.fam[name][1])
