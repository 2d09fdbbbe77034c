"""Gather every ``p*.json`` into ``latest.json`` (stable top-level keys) and ``latest.md`` (goal, measured,
holds). P4 and P5 come from the inference API and aggregator benchmarks; a figure nobody measured is null
and its row says why."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TOP_LEVEL_KEYS = (
    "p1_upload_bytes",
    "p1_accuracy_cost_pt",
    "p2_round_speedup",
    "p2_50round_speedup",
    "p3_embed_efficiency",
    "p4_predict_p50_ratio",
    "p4_batch_throughput_ratio",
    "p4_api_cpu_ratio",
    "p4_api_p50_ms",
    "p4_api_p99_ms",
    "p4_soak_rss_mib_per_min",
    "p5_round_close_ms",
    "p6_dp_accuracy_cost_pt_eps8",
    "p6_dp_time_ratio_eps8",
    "p7_site_rounds_per_s_cpu",
    "p7_site_rounds_per_cpu_s",
    "p8_secagg_upload_bytes",
    "p8_secagg_round_overhead_100_sites",
)


@dataclass(frozen=True)
class Goal:
    key: str
    what: str
    target: str
    holds: Callable[[float], bool]
    show: Callable[[float], str]


def _kib(value: float) -> str:
    return f"{value / 1024:.1f} KiB"


def _times(value: float) -> str:
    return f"{value:,.0f}×"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


GOALS = (
    Goal("p1_upload_bytes", "P1 upload per site per round (masked, worst)", "≤ 128 KiB", lambda v: v <= 131072, _kib),
    Goal(
        "p1_accuracy_cost_pt",
        "P1 accuracy cost, masked vs dense fp32",
        "≤ 0.5 pt",
        lambda v: v <= 0.5,
        "{:+.2f} pt".format,
    ),
    Goal("p2_round_speedup", "P2 local round vs FedAvg round", "≥ 500×", lambda v: v >= 500, _times),
    Goal("p2_50round_speedup", "P2 50 rounds + embedding pass vs FedAvg", "≥ 100×", lambda v: v >= 100, _times),
    Goal("p3_embed_efficiency", "P3 embedding pass vs raw encode_image", "≥ 90%", lambda v: v >= 0.9, _percent),
    Goal("p4_predict_p50_ratio", "P4 REST predict p50 / raw encode", "≤ 1.15×", lambda v: v <= 1.15, "{:.2f}×".format),
    Goal("p4_batch_throughput_ratio", "P4 batched / raw batch-32 throughput", "≥ 80%", lambda v: v >= 0.8, _percent),
    Goal("p5_round_close_ms", "P5 round close, 100 sites", "≤ 200 ms", lambda v: v <= 200, "{:.0f} ms".format),
    Goal(
        "p6_dp_accuracy_cost_pt_eps8",
        "P6 accuracy cost of record-level DP at ε = 8",
        "≤ 3 pt",
        lambda v: v <= 3.0,
        "{:+.2f} pt".format,
    ),
    Goal(
        "p8_secagg_upload_bytes",
        "P8 secure upload per site, 100 sites, ρ 0.2",
        "≤ 256 KiB",
        lambda v: v <= 262144,
        _kib,
    ),
    Goal(
        "p8_secagg_round_overhead_100_sites",
        "P8 secure / plain round compute, 100 sites",
        "reported",
        lambda v: v > 0,
        "{:.2f}×".format,
    ),
)


def read_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    """``pN`` → the contents of ``results_dir/pN.json``, plus ``p4_concurrency.json`` (the API concurrency and
    soak figures, written beside ``p4.json``); unreadable files are recorded as such."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(results_dir.glob("p*.json")):
        if not re.fullmatch(r"p\d+|p4_concurrency", path.stem):
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            data = {"error": f"unreadable: {error}"}
        found[path.stem] = data if isinstance(data, dict) else {"error": "not a JSON object"}
    return found


def assemble(
    results: dict[str, dict[str, Any]],
    machine: dict[str, Any],
    runs: dict[str, dict[str, Any]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``latest.json`` document: the top-level figures, their goals, and every source file in full."""
    latest: dict[str, Any] = {key: None for key in TOP_LEVEL_KEYS}
    for data in results.values():
        for key in TOP_LEVEL_KEYS:
            value = data.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                latest[key] = float(value) if key not in ("p1_upload_bytes", "p8_secagg_upload_bytes") else int(value)
    latest["machine"] = machine
    latest["goals"] = {
        goal.key: {
            "what": goal.what,
            "goal": goal.target,
            "measured": latest[goal.key],
            "holds": None if latest[goal.key] is None else bool(goal.holds(latest[goal.key])),
        }
        for goal in GOALS
    }
    latest["runs"] = runs
    latest["details"] = results
    if extra:
        latest.update(extra)
    return latest


def to_markdown(latest: dict[str, Any]) -> str:
    machine = latest.get("machine", {})
    lines = [
        "# Benchmarks (bench/run_all.py)",
        "",
        f"Machine: {machine.get('cpu_count')} CPUs, torch {machine.get('torch_version')}, device "
        f"{machine.get('device_name')} ({machine.get('device')}), 1-min load average at start "
        f"{machine.get('load_average_1m', '?')}. Every figure is a ratio of two sides measured in the same run.",
        "",
        "| goal | target | measured | holds |",
        "|---|---|---|---|",
    ]
    runs = latest.get("runs", {})
    for goal in GOALS:
        value = latest.get(goal.key)
        if value is None:
            source = goal.key.split("_")[0]
            reason = runs.get(source, {}).get("status", "not measured")
            lines.append(f"| {goal.what} | {goal.target} | — ({reason}) | not measured |")
        else:
            lines.append(
                f"| {goal.what} | {goal.target} | {goal.show(value)} | {'yes' if goal.holds(value) else 'no'} |"
            )
    lines += ["", *_details(latest.get("details", {}))]
    gpu = latest.get("gpu")
    if isinstance(gpu, dict) and gpu:
        lines += ["", "## GPU (bench/gpu.py)", ""]
        for name, data in gpu.items():
            p2, p3 = data.get("p2", {}), data.get("p3", {})
            lines.append(
                f"- {name}: P2 round {_fmt(p2.get('p2_round_speedup'), '{:,.0f}×')}, 50 rounds "
                f"{_fmt(p2.get('p2_50round_speedup'), '{:,.0f}×')}; P3 efficiency "
                f"{_fmt(p3.get('p3_embed_efficiency'), '{:.1%}')} "
                f"(raw {_fmt(p3.get('raw_images_per_s'), '{:,.0f}')} img/s, pass "
                f"{_fmt(p3.get('pass_images_per_s'), '{:,.0f}')} img/s); measured {data.get('measured_at', '?')}"
            )
    return "\n".join(lines) + "\n"


def _fmt(value: Any, pattern: str) -> str:
    return pattern.format(value) if isinstance(value, int | float) else "—"


def _details(details: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    p1 = details.get("p1", {})
    if "bytes_per_site_round" in p1:
        sizes = p1["bytes_per_site_round"]
        lines += [
            f"- P1 (D={p1.get('embed_dim')}, {p1.get('sites')} sites, {p1.get('rounds')} rounds, seeds "
            f"{p1.get('seeds')}): masked {_kib(sizes['masked_max'])} worst / {_kib(sizes['masked_mean'])} mean; "
            f"dense fp32 {_kib(sizes['dense_fp32_mean'])}; reference fp16+zlib {_kib(sizes['reference_fp16_zlib'])}; "
            f"FedAvg whole CLIP {sizes['fedavg_full_clip_fp32'] / 1e6:,.1f} MB. Accuracy masked "
            f"{_pct(p1['accuracy']['masked_per_seed'])} vs dense {_pct(p1['accuracy']['dense_per_seed'])} "
            f"(per seed, {p1['accuracy']['evaluation_images_per_seed']} evaluation images each; cost "
            f"{_fmt(p1['accuracy'].get('cost_pt_standard_error'), '± {:.2f}')} pt standard error)."
        ]
    p2 = details.get("p2", {})
    if "ours" in p2:
        ours, fedavg = p2["ours"], p2["fedavg"]
        lines += [
            f"- P2 ({p2.get('model')} on {p2.get('device')}, {p2.get('images')} images, batch "
            f"{p2.get('batch_size')}): ours {ours['round_s_median'] * 1000:.1f} ms per round (median), "
            f"embedding pass {ours['embed_pass_s']:.1f} s, "
            f"{p2.get('rounds')} rounds total {ours['run_total_s']:.1f} s, {ours['timed']}. FedAvg "
            f"{fedavg['step_s']:.2f} s per step, {fedavg['round_s']:.1f} s per round, {fedavg['timed']}."
        ]
    p3 = details.get("p3", {})
    if "raw_images_per_s" in p3:
        lines += [
            f"- P3 ({p3.get('model')} on {p3.get('device')}, {p3.get('images')} images, batch {p3.get('batch_size')}, "
            f"{p3.get('num_workers')} loader workers): raw {p3['raw_images_per_s']:.1f} img/s, pass "
            f"{p3['pass_images_per_s']:.1f} img/s on average; {p3.get('timed')}; the encoder was busy "
            f"{_fmt(p3.get('encoder_busy_share_median'), '{:.1%}')} of the pass's wall time."
        ]
    p6 = details.get("p6", {})
    if isinstance(p6.get("table"), dict):
        rows = [
            f"ε={label}: {100 * row['accuracy']:.1f}% ({row['accuracy_cost_pt']:+.2f} pt, ε achieved "
            f"{_fmt(row.get('epsilon_achieved'), '{:.2f}')}, {row['time_ratio_vs_non_private']:.2f}× time per round)"
            for label, row in p6["table"].items()
        ]
        lines += [
            f"- P6 (D={p6.get('embed_dim')}, {p6.get('rounds')} rounds, {p6.get('seeds')} seed(s), C = "
            f"{p6.get('clip_norm')}, expected batch {p6.get('expected_batch')}): " + "; ".join(rows) + "."
        ]
    return lines


def _pct(values: list[float]) -> str:
    return "/".join(f"{100 * v:.1f}%" for v in values)
