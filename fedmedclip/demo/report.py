"""The demo's report beside ``report.json``: ``report.md`` and its PNG plots (accuracy per round per site,
bytes uploaded per round per site, round times)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedmedclip.experiment import plots

ACCURACY_PLOT = "accuracy_per_round.png"
UPLOAD_PLOT = "upload_per_round.png"
ROUND_TIME_PLOT = "round_times.png"
_COMPONENTS = {"zero_shot_acc": "zero-shot", "head_acc": "head", "ensemble_acc": "ensemble"}


def write_plots(report: dict[str, Any], out: Path) -> list[Path]:
    """The three plots from ``report.json``'s content; returns the files written."""
    rounds = report["rounds"]
    sites = list(report["sites"])
    accuracy = {
        site: {
            f"{label} (val)": [r["metrics"].get(site, {}).get(key, float("nan")) for r in rounds]
            for key, label in _COMPONENTS.items()
        }
        for site in sites
    }
    # The served model's accuracy on the held-out test images, after the last round, over REST.
    final = {
        site: {
            f"{label} (test, served)": (float(len(rounds)), report["sites"][site][key])
            for key, label in _COMPONENTS.items()
        }
        for site in sites
    }
    uploads = {site: [float(r["bytes"].get(site, 0)) for r in rounds] for site in sites}
    times = {"round close time": [float(r["close_s"]) if r["close_s"] is not None else float("nan") for r in rounds]}
    return [
        plots.line_panels(
            out / ACCURACY_PLOT,
            "Accuracy per round (lines: validation, reported by each agent; stars: served model on test)",
            accuracy,
            ylabel="accuracy",
            markers=final,
            percent=True,
        ),
        plots.line_panels(out / UPLOAD_PLOT, "Bytes uploaded per round", {"per site": uploads}, ylabel="bytes"),
        plots.line_panels(out / ROUND_TIME_PLOT, "Round times (open → closed)", {"all sites": times}, ylabel="seconds"),
    ]


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def to_markdown(report: dict[str, Any]) -> str:
    backbone = report["backbone"]
    lines = [
        "# FedMedCLIP demo",
        "",
        f"- backbone: {backbone['name']} {backbone['weights']}"
        + ("" if backbone["pretrained"] else " (**random init: accuracies say nothing about pretrained CLIP**)"),
        f"- {len(report['rounds'])} rounds, {len(report['sites'])} sites, wall time {report['wall_time_s']:.0f} s",
        "- test accuracies: the served bundle after the last round, over REST, on each site's held-out test images",
        "",
        "## Held-out test images, served model",
        "",
        "| site | images | zero-shot | head | ensemble | macro-F1 | ECE served | ECE uncalibrated | T | "
        "val ECE before → after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, site in report["sites"].items():
        temperature = f"{site['temperature']:.2f}" if site.get("temperature") else "—"
        val = (
            f"{_pct(site['val_ece_before'])} → {_pct(site['val_ece_after'])}"
            if site.get("val_ece_before") is not None
            else "uncalibrated"
        )
        lines.append(
            f"| {name} | {site['n_images']} | {_pct(site['zero_shot_acc'])} | {_pct(site['head_acc'])} | "
            f"{_pct(site['ensemble_acc'])} | {_pct(site['macro_f1'])} | {_pct(site['ece'])} | "
            f"{_pct(site['ece_uncalibrated'])} | {temperature} | {val} |"
        )
    lines += [
        "",
        "Accuracies, macro-F1 and ECE in %. ECE: 15 equal-width bins. T: the temperature the agent fitted on its "
        "validation split and stored in the bundle.",
        "",
        "## Rounds",
        "",
        "| round | FAM version | open → closed (s) | bytes uploaded (all sites) |",
        "|---|---|---|---|",
    ]
    for item in report["rounds"]:
        close = f"{item['close_s']:.1f}" if item["close_s"] is not None else "—"
        lines.append(f"| {item['round']} | {item['version']} | {close} | {sum(item['bytes'].values())} |")
    lines += [
        "",
        "## Accuracy per round",
        "",
        f"![Accuracy per round]({ACCURACY_PLOT})",
        "",
        "## Bytes uploaded per round",
        "",
        f"![Bytes uploaded per round]({UPLOAD_PLOT})",
        "",
        "## Round times",
        "",
        f"![Round times]({ROUND_TIME_PLOT})",
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out: Path) -> Path:
    write_plots(report, out)
    path = out / "report.md"
    path.write_text(to_markdown(report))
    return path
