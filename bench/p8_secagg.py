#!/usr/bin/env python3
"""P8: secure aggregation's cost (docs/design.md §6.4): upload bytes per site and round time against plain mode.

    python bench/p8_secagg.py            # D = 512 (ViT-B-32), 3, 10 and 100 simulated sites
    python bench/p8_secagg.py --quick    # D = 64, 3 and 10 sites (for tests)

Measured side by side in one process, with the run's default settings (ρ = 0.2):

- **upload bytes per site per round**: every message a site sends in a secure round (advertise, sealed
  shares, the masked-input stream, unmask shares), serialised as protobuf exactly as the agent sends it,
  at 100 sites; the plain codec's update beside it. Goal ≤ 256 KiB (``p8_secagg_upload_bytes``).
- **round time**: the compute of one whole round, every simulated site's work plus the aggregator's,
  secure (keys, shares, masks, packing, unmasking, decoding) over plain (codec encode, decode and
  validate, aggregate), at 3, 10 and 100 sites. Network and training are left out: they are the same on
  both sides. Ratio at 100 sites: ``p8_secagg_round_overhead_100_sites``.
- **SecAgg+ scaling**: one site's masking work at growing n with the auto degree (k ~ log n) against all
  pairs (k = n − 1).

Writes ``bench/results/p8.json`` and merges its keys into ``bench/results/latest.json`` (other keys kept).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedmedclip.federation import messages as m  # noqa: E402
from fedmedclip.federation import serde  # noqa: E402
from fedmedclip.federation.aggregate import SiteUpdate, aggregate, validate_update  # noqa: E402
from fedmedclip.federation.codec import CodecConfig, decode_update, encode_update  # noqa: E402
from fedmedclip.federation.fam_bytes import initial_fam  # noqa: E402
from fedmedclip.model.fam import FAM_MATRIX_NAMES, fam_shapes  # noqa: E402
from fedmedclip.secagg import encoding, packing  # noqa: E402
from fedmedclip.secagg.config import SecureAggregationConfig  # noqa: E402
from fedmedclip.secagg.protocol import Directory, SecAggClient, unmask_sum  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GOAL_BYTES = 256 * 1024
RUN = "bench-run"


def deltas(sites: int, dim: int) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [
        {name: torch.randn(shape, generator=generator) * 1e-3 for name, shape in fam_shapes(dim).items()}
        for _ in range(sites)
    ]


def plain_round(updates: list[dict[str, torch.Tensor]], dim: int) -> tuple[float, float, int]:
    """(sites' seconds, server seconds, worst payload bytes) of one plain round."""
    alive = {name: torch.ones(dim, dtype=torch.bool) for name in FAM_MATRIX_NAMES}
    started = time.perf_counter()
    encoded = [encode_update(delta, alive, None, CodecConfig()) for delta in updates]
    sites_s = time.perf_counter() - started
    started = time.perf_counter()
    parent = initial_fam(dim, 0)
    decoded = []
    for i, item in enumerate(encoded):
        update = decode_update(item.payload, item.sha256)
        validate_update(update, fam_shapes(dim), None, f"s{i}", 10)
        decoded.append(SiteUpdate(f"s{i}", 10, update))
    aggregate(parent, decoded, "samples", None, prevalidated=True)
    return sites_s, time.perf_counter() - started, max(len(item.payload) for item in encoded)


def secure_round(updates: list[dict[str, torch.Tensor]], dim: int, secure: SecureAggregationConfig) -> dict[str, Any]:
    """One whole secure round in memory: every site's phases, the aggregator's unmasking and decoding."""
    n = len(updates)
    names = [f"site-{i:03d}" for i in range(n)]
    layout = encoding.round_layout(RUN, 1, dim, secure.row_fraction)
    params = encoding.round_params(RUN, 1, secure, dim, n)
    fixed = secure.fixed_point(n)
    alive = {name: np.ones(dim, dtype=bool) for name in encoding.MATRIX_NAMES}
    site_s = dict.fromkeys(names, 0.0)
    sent = dict.fromkeys(names, 0)

    def timed(site: str, work: Any) -> Any:
        started = time.perf_counter()
        result = work()
        site_s[site] += time.perf_counter() - started
        return result

    clients = {name: SecAggClient(name) for name in names}
    encoded = {
        name: timed(
            name,
            lambda d=delta: encoding.encode_site(
                {k: v.numpy() for k, v in d.items()}, None, alive, layout, secure, secure.weight_cap
            ),
        )
        for name, delta in zip(names, updates, strict=True)
    }
    advertised = []
    for name in names:
        keys = timed(name, clients[name].advertise)
        advertised.append(keys)
        sent[name] += len(
            serde.advertise_keys_request_to_proto(m.AdvertiseKeysRequest(RUN, 1, keys)).SerializeToString()
        )
    inbox: dict[str, list[m.SealedShares]] = {name: [] for name in names}
    for name in names:
        sealed = timed(name, lambda c=clients[name]: c.share_keys(advertised, params))
        request = m.ShareKeysRequest(RUN, 1, tuple(sealed))
        sent[name] += len(serde.share_keys_request_to_proto(request).SerializeToString())
        for item in sealed:
            inbox[item.receiver].append(item)
    masked = {}
    for name in names:
        vector = timed(
            name, lambda c=clients[name], e=encoded[name], s=inbox[name]: c.masked_input(s, e.residues(fixed))
        )
        data = timed(name, lambda v=vector: packing.pack(v, fixed.bits))
        header = m.MaskedInputHeader(RUN, 1, hashlib.sha256(data).hexdigest(), len(data))
        sent[name] += sum(
            len(c.SerializeToString()) for c in serde.masked_input_chunks_to_proto(header, data, 256 << 10)
        )
        masked[name] = data
    revealed = {}
    for name in names:
        shares = timed(name, lambda c=clients[name]: c.unmask(names, []))
        revealed[name] = shares
        sent[name] += len(serde.unmask_request_to_proto(m.UnmaskRequest(RUN, 1, tuple(shares))).SerializeToString())
    started = time.perf_counter()
    directory = Directory(params, advertised)
    vectors = {name: packing.unpack(data, params.bits, params.length) for name, data in masked.items()}
    shared = {name: {item.sender for item in inbox[name]} for name in names}
    total = unmask_sum(directory, shared, vectors, revealed)
    decoded = encoding.decode_sum(total, layout, secure, fixed)
    parent = {k: v.numpy() for k, v in initial_fam(dim, 0).items()}
    encoding.fam_arrays_to_bytes(encoding.apply_mean(parent, decoded, layout))
    server_s = time.perf_counter() - started
    exact = sum(e.integers for e in encoded.values())
    assert np.array_equal(fixed.to_signed(total), exact), "the unmasked sum is not exact"
    return {
        "sites_seconds": sum(site_s.values()),
        "per_site_seconds": statistics.median(site_s.values()),
        "server_seconds": server_s,
        "upload_bytes": max(sent.values()),
        "masked_input_bytes": len(next(iter(masked.values()))),
        "bits": params.bits,
        "degree": params.degree if params.degree is not None else n - 1,
        "threshold": params.threshold,
        "length": params.length,
    }


def scaling(dim: int, counts: list[int], secure: SecureAggregationConfig) -> list[dict[str, Any]]:
    """One site's share-keys + masking seconds at each n, SecAgg+ (auto degree) and all pairs."""
    rows = []
    for n in counts:
        row: dict[str, Any] = {"sites": n}
        for label, config in (("auto", secure), ("all_pairs", SecureAggregationConfig(enabled=True, degree="all"))):
            params = encoding.round_params(RUN, 1, config, dim, n)
            clients = [SecAggClient(f"site-{i:03d}") for i in range(n)]
            advertised = [c.advertise() for c in clients]
            me = clients[0]
            started = time.perf_counter()
            sealed = me.share_keys(advertised, params)
            incoming = [c.share_keys(advertised, params) for c in clients[1:] if c.site in {s.receiver for s in sealed}]
            mine = [item for batch in incoming for item in batch if item.receiver == me.site]
            setup = time.perf_counter() - started
            started = time.perf_counter()
            me.masked_input(mine, np.zeros(params.length, dtype=np.uint64))
            row[label] = {
                "degree": params.degree if params.degree is not None else n - 1,
                "mask_seconds": time.perf_counter() - started,
                "setup_seconds_including_peers": setup,
            }
        rows.append(row)
    return rows


def merge_latest(figures: dict[str, Any], path: Path) -> None:
    """Put P8's keys, goals and details into ``latest.json`` (keeping every other key) and redo ``latest.md``."""
    from fedmedclip.experiment.perf.collect import GOALS, to_markdown

    latest = json.loads(path.read_text()) if path.is_file() else {}
    keys = ("p8_secagg_upload_bytes", "p8_secagg_round_overhead_100_sites")
    latest.update({key: figures[key] for key in keys})
    goals = latest.setdefault("goals", {})
    for goal in GOALS:
        if goal.key in keys:
            value = figures[goal.key]
            holds = None if value is None else bool(goal.holds(value))
            goals[goal.key] = {"what": goal.what, "goal": goal.target, "measured": value, "holds": holds}
    latest.setdefault("details", {})["p8"] = figures
    path.write_text(json.dumps(latest, indent=2, sort_keys=False) + "\n")
    path.with_suffix(".md").write_text(to_markdown(latest))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="D = 64 and 3, 10 sites (seconds; for tests)")
    parser.add_argument("--dim", type=int, default=None, help="FAM width D (default 512, ViT-B-32)")
    parser.add_argument("--out", type=Path, default=RESULTS / "p8.json", help="where the JSON result goes")
    parser.add_argument("--no-merge", action="store_true", help="do not merge the keys into latest.json")
    options = parser.parse_args(argv)
    torch.set_num_threads(1)  # as the aggregator runs (torch_threads: 1); numpy's side is single-threaded too
    dim = options.dim or (64 if options.quick else 512)
    counts = [3, 10] if options.quick else [3, 10, 100]
    secure = SecureAggregationConfig(enabled=True)
    table = []
    for n in counts:
        updates = deltas(n, dim)
        plain_sites, plain_server, plain_bytes = plain_round(updates, dim)
        measured = secure_round(updates, dim, secure)
        plain_total = plain_sites + plain_server
        secure_total = measured["sites_seconds"] + measured["server_seconds"]
        row = {
            "sites": n,
            "plain_seconds": plain_total,
            "secure_seconds": secure_total,
            "overhead": secure_total / plain_total,
            "plain_upload_bytes": plain_bytes,
            **measured,
        }
        table.append(row)
        print(
            f"{n:>4} sites  D={dim}: plain {plain_total:7.3f} s  secure {secure_total:7.3f} s  "
            f"overhead {row['overhead']:5.2f}×  upload {measured['upload_bytes'] / 1024:6.1f} KiB "
            f"(plain {plain_bytes / 1024:5.1f} KiB)  bits {measured['bits']}  k {measured['degree']}  "
            f"t {measured['threshold']}",
            flush=True,
        )
    largest = table[-1]
    scale = scaling(dim, [25, 50, 100] if not options.quick else [8, 16], secure)
    for row in scale:
        auto, pairs = row["auto"], row["all_pairs"]
        auto_ms, pairs_ms = auto["mask_seconds"] * 1000, pairs["mask_seconds"] * 1000
        print(
            f"scaling n={row['sites']:>3}: one site masks with k={auto['degree']:>2} in {auto_ms:6.1f} ms,"
            f" all pairs k={pairs['degree']:>3} in {pairs_ms:6.1f} ms"
        )
    figures: dict[str, Any] = {
        "p8_secagg_upload_bytes": largest["upload_bytes"] if largest["sites"] == 100 else None,
        "p8_secagg_round_overhead_100_sites": largest["overhead"] if largest["sites"] == 100 else None,
        "goal_upload_bytes": GOAL_BYTES,
        "dim": dim,
        "row_fraction": secure.row_fraction,
        "rounds": table,
        "scaling": scale,
        "quick": options.quick,
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(figures, indent=2) + "\n")
    if not options.no_merge and not options.quick:
        merge_latest(figures, options.out.parent / "latest.json")
    print(f"wrote {options.out}")
    return figures


if __name__ == "__main__":
    main()
