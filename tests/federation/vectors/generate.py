"""Regenerate the fixed aggregation vectors: ``python tests/federation/vectors/generate.py``.

They were produced by the torch implementation of the codec and aggregation (before the numpy port) and
pin what the aggregator computes: ``test_vectors.py`` checks that decoding these payloads and aggregating
them gives the stored results bit for bit. Only regenerate for a deliberate change to an aggregate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fedmedclip.federation.aggregate import SiteUpdate, aggregate
from fedmedclip.federation.codec import CodecConfig, decode_update, encode_update
from fedmedclip.federation.fam_bytes import fam_to_bytes, initial_fam

HERE = Path(__file__).resolve().parent
DIM = 48
SEED = 7

# site, num_samples, codec, fraction of dead rows per matrix, whether it carries a residual
SITES = [
    ("site-a", 120, CodecConfig(rho=0.25, quantization="int8", compression="zstd"), 0.0, False),
    ("site-b", 45, CodecConfig(rho=0.25, quantization="fp16", compression="zlib"), 0.2, True),
    ("site-c", 300, CodecConfig(rho=1.0, quantization="fp32", compression="none"), 0.0, False),
    ("site-d", 7, CodecConfig(rho=0.1, quantization="int8", compression="zlib"), 0.5, True),
    ("site-e", 88, CodecConfig(rho=0.5, quantization="fp16", compression="zstd"), 0.7, False),
    ("site-f", 61, CodecConfig(rho=0.3, quantization="int8", compression="zstd"), 0.1, True),
]
# name, sites, weighting
AGGREGATES = [
    ("all-samples", [s[0] for s in SITES], "samples"),
    ("all-uniform", [s[0] for s in SITES], "uniform"),
    ("sparse-pair-samples", ["site-a", "site-d"], "samples"),
    ("sparse-trio-uniform", ["site-b", "site-d", "site-e"], "uniform"),
]


def main() -> None:
    generator = torch.Generator().manual_seed(SEED)
    global_state = initial_fam(DIM, SEED)
    (HERE / "global.safetensors").write_bytes(fam_to_bytes(global_state))
    inputs: dict[str, np.ndarray] = {}
    meta: dict[str, object] = {"dim": DIM, "sites": {}, "aggregates": {}}
    decoded = {}
    for site, samples, codec, dead_fraction, with_residual in SITES:
        delta = {name: torch.randn(tuple(t.shape), generator=generator) * 0.01 for name, t in global_state.items()}
        delta["m1.weight"][3] = 0.0  # an all-zero row is never sent
        delta["m1.kappa"] *= 1000.0  # large vector values: int8 never applies to vectors
        alive = {name: torch.rand(DIM, generator=generator) >= dead_fraction for name in ("m1.weight", "m2.weight")}
        residual = (
            {name: torch.randn(tuple(t.shape), generator=generator) * 0.003 for name, t in delta.items()}
            if with_residual
            else None
        )
        encoded = encode_update(delta, alive, residual, codec)
        (HERE / f"{site}.bin").write_bytes(encoded.payload)
        for name in delta:
            inputs[f"{site}/delta/{name}"] = delta[name].numpy()
            inputs[f"{site}/residual_out/{name}"] = encoded.residual[name].numpy()
            if residual is not None:
                inputs[f"{site}/residual_in/{name}"] = residual[name].numpy()
        for name, mask in alive.items():
            inputs[f"{site}/alive/{name}"] = mask.numpy()
        meta["sites"][site] = {  # type: ignore[index]
            "num_samples": samples,
            "codec": codec.to_dict(),
            "sha256": encoded.sha256,
            "residual": with_residual,
        }
        decoded[site] = decode_update(encoded.payload, encoded.sha256)
        for name, tensor in decoded[site].to_dense().items():
            inputs[f"{site}/decoded/{name}"] = tensor.numpy()
    expected: dict[str, np.ndarray] = {}
    for label, sites, weighting in AGGREGATES:
        updates = [SiteUpdate(s[0], s[1], decoded[s[0]]) for s in SITES if s[0] in sites]
        result = aggregate(global_state, updates, weighting)  # type: ignore[arg-type]
        for name, tensor in result.items():
            expected[f"{label}/{name}"] = tensor.numpy()
        meta["aggregates"][label] = {"sites": sites, "weighting": weighting}  # type: ignore[index]
    np.savez_compressed(HERE / "inputs.npz", **inputs)
    np.savez_compressed(HERE / "expected.npz", **expected)
    (HERE / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
