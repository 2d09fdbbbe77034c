"""The paper-style tables, as markdown, rich tables and JSON, built from one set of rows.

Our measurements and the paper's figures never share a cell: the paper's appear in columns and tables whose
titles say "paper", with their source.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from fedmedclip.experiment import paper, plots
from fedmedclip.experiment.config import ISIC2019Data
from fedmedclip.experiment.results import RESULTS_JSON, RESULTS_MD, ExperimentResult, MethodResult


@dataclass
class TableSpec:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    caption: str = ""


def percent(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def human_bytes(count: float | None) -> str:
    if count is None:
        return "—"
    if count == 0:
        return "0"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"


def seconds(value: float) -> str:
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def build_tables(result: ExperimentResult) -> list[TableSpec]:
    sites = list(result.sites)
    methods = [m for m in result.methods if m.kind == "method"]
    ablations = [m for m in result.methods if m.kind == "ablation"]
    on_isic = isinstance(result.config.data, ISIC2019Data)
    tables = [_main_table(result, sites, methods, on_isic)]
    if ablations:
        tables.append(_ablation_table(sites, ablations, on_isic))
    tables.append(_paper_table(on_isic))
    return tables


def _rounds(method: MethodResult) -> str:
    if not method.rounds_run:
        return "—"
    selected = f" (best {method.selected_round})" if method.selected_round not in (None, method.rounds_run) else ""
    return f"{method.rounds_run}{selected}"


def _common_cells(method: MethodResult, sites: list[str]) -> list[str]:
    holdout = method.holdout["accuracy"] if method.holdout else None
    return [
        *(percent(method.per_site.get(site, {}).get("accuracy")) for site in sites),
        percent(method.average("accuracy")),
        percent(method.average("macro_f1")),
        percent(method.average("ece")),
        percent(holdout),
        human_bytes(method.upload_bytes),
        human_bytes(method.upload_per_site_round),
        seconds(method.compute_seconds),
        _rounds(method),
    ]


_COMMON_COLUMNS = [
    "avg acc %",
    "avg macro-F1 %",
    "avg ECE %",
    "held-out acc %",
    "upload total",
    "upload /site/round",
    "compute s",
    "rounds",
]


def _main_table(result: ExperimentResult, sites: list[str], methods: list[MethodResult], on_isic: bool) -> TableSpec:
    holdout = next(iter(result.holdout), None) if result.holdout else None
    spec = TableSpec(
        title=f"{result.config.name}: accuracy on each site's test split (ours, measured)",
        columns=["method", *(f"{site} acc %" for site in sites), *_COMMON_COLUMNS, "paper avg acc % (ISIC2019)"],
        caption=(
            f"{result.backbone} on {result.device}, D={result.embed_dim}; "
            + (f"held-out site {holdout} predicted by the global model's zero-shot matching alone; " if holdout else "")
            + "compute = training rounds + the shared embedding pass (cached methods) or the pixel training "
            "(FedAvg); upload = site→server bytes over all rounds run. The last column is the paper's figure "
            + ("for this dataset." if on_isic else "for ISIC2019, a different dataset: context only.")
        ),
    )
    for method in methods:
        published = paper.ISIC2019.get(method.key)
        spec.rows.append(
            [method.label, *_common_cells(method, sites), _paper_cell(published.avg_acc if published else None)]
        )
    return spec


def _ablation_table(sites: list[str], ablations: list[MethodResult], on_isic: bool) -> TableSpec:
    spec = TableSpec(
        title="FedMedCLIP ablations (ours, measured)",
        columns=["variant", "switches", *(f"{site} acc %" for site in sites), *_COMMON_COLUMNS, "paper ablation"],
        caption="paper ablation = the paper's ISIC2019 average accuracy for the same switches"
        + ("" if on_isic else " (a different dataset: context only)"),
    )
    for method in ablations:
        switches = method.switches
        reference = paper.ablation_reference(
            bool(switches.get("use_contrastive")),
            bool(switches.get("use_head_ce")),
            bool(switches.get("use_kd")),
            bool(switches.get("aggregate")),
        )
        spec.rows.append(
            [
                method.label,
                _describe_switches(switches),
                *_common_cells(method, sites),
                f"{reference[1]:.2f} ({reference[0]})" if reference else "—",
            ]
        )
    return spec


def _describe_switches(switches: dict[str, Any]) -> str:
    terms = (("contr", "use_contrastive"), ("CE", "use_head_ce"), ("KD", "use_kd"))
    losses = [name for name, key in terms if switches.get(key)]
    codec = switches.get("codec", {})
    dense = codec.get("rho") == 1.0 and codec.get("quantization") == "fp32"
    update = "dense fp32" if dense else f"rho {codec.get('rho')} {codec.get('quantization')}"
    parts = ["+".join(losses) or "no loss", "agg" if switches.get("aggregate") else "no agg", update]
    parts.append(f"{switches.get('preprocess')} preproc")
    return ", ".join(parts)


def _paper_cell(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _paper_table(on_isic: bool) -> TableSpec:
    spec = TableSpec(
        title=f"Published figures: {paper.CITATION} ({paper.SETTING}); NOT measured here",
        columns=[
            "method (paper)",
            *(f"C{i}" for i in range(1, 7)),
            "held-out",
            "avg acc %",
            "macro-F1 % (fig)",
            "compute min",
            "communication GB",
            "source",
        ],
        caption="C1..C6 presumably follow the reference's domain order: "
        + ", ".join(paper.SITE_ORDER)
        + "; held-out = images without an anatomical site. "
        + ("" if on_isic else "Our run uses other data: compare trends, not values."),
    )
    for published in paper.ISIC2019.values():
        per_site = list(published.per_site_acc) if published.per_site_acc else [None] * 6
        spec.rows.append(
            [
                published.method,
                *(_paper_cell(v) for v in per_site),
                _paper_cell(published.holdout_acc),
                _paper_cell(published.avg_acc),
                _paper_cell(published.macro_f1),
                _paper_cell(published.compute_min),
                _paper_cell(published.communication_gb, 3),
                published.source,
            ]
        )
    return spec


def to_markdown(result: ExperimentResult, plots: Sequence[str] | None = None) -> str:
    """The Markdown report; ``plots`` names the PNG files written beside it (all of ``PLOTS`` when None)."""
    config = result.config
    lines = [
        f"# Experiment `{config.name}`",
        "",
        f"- backbone: {result.backbone} on {result.device} (embedding width {result.embed_dim})",
        f"- data: `{config.data.kind}`; training sites (train/val/test): "
        + ", ".join(f"{name} {sizes['train']}/{sizes['val']}/{sizes['test']}" for name, sizes in result.sites.items()),
        f"- held-out site: {', '.join(f'{n} ({c} images)' for n, c in result.holdout.items())}"
        if result.holdout
        else "- held-out site: none",
        f"- rounds: {config.federation.rounds}, selection: {config.federation.selection}, "
        f"weighting: {config.federation.weighting}, codec: {config.federation.codec.model_dump()}",
        f"- machine: {result.machine.get('cpu_count')} CPUs, torch {result.machine.get('torch_version')}, "
        f"device {result.machine.get('device_name')}; wall time {result.wall_seconds:.0f} s",
        "",
    ]
    for spec in build_tables(result):
        lines += [f"## {spec.title}", "", _markdown_table(spec), ""]
        if spec.caption:
            lines += [spec.caption, ""]
    calibration = _calibration_table(result)
    if calibration is not None:
        lines += [f"## {calibration.title}", "", _markdown_table(calibration), "", calibration.caption, ""]
    for title, file in PLOTS.items():
        if plots is None or file in plots:
            lines += [f"## {title}", "", f"![{title}]({file})", ""]
    notes = [*result.notes, *(f"{m.label}: {note}" for m in result.methods for note in m.notes)]
    if notes:
        lines += ["## Notes", "", *(f"- {note}" for note in notes), ""]
    return "\n".join(lines)


def _markdown_table(spec: TableSpec) -> str:
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([row(spec.columns), "|" + "---|" * len(spec.columns), *(row(r) for r in spec.rows)])


def to_rich(spec: TableSpec) -> Table:
    table = Table(title=spec.title, caption=spec.caption or None, caption_justify="left")
    for index, column in enumerate(spec.columns):
        table.add_column(column, justify="left" if index == 0 else "right", overflow="fold")
    for row in spec.rows:
        table.add_row(*row)
    return table


def write_reports(result: ExperimentResult, out_dir: Path) -> dict[str, Path]:
    paths = {"json": out_dir / RESULTS_JSON, "markdown": out_dir / RESULTS_MD}
    payload = result.to_json()
    payload["paper"] = {key: row.__dict__ for key, row in paper.ISIC2019.items()}
    paths["json"].write_text(json.dumps(_clean(payload), indent=2, allow_nan=False) + "\n")
    written = write_plots(result, out_dir)
    paths.update(written)
    paths["markdown"].write_text(to_markdown(result, [p.name for p in written.values()]))
    return paths


PLOTS = {
    "Accuracy per round": "accuracy_per_round.png",
    "Upload per round": "upload_per_round.png",
    "Reliability of the FedMedCLIP ensemble": "reliability.png",
}


def write_plots(result: ExperimentResult, out_dir: Path) -> dict[str, Path]:
    """The PNG plots beside ``results.md``: validation accuracy per round per method and site (a star marks
    the test accuracy at the selected round), bytes uploaded per round, and the reliability diagram of the
    calibrated and uncalibrated FedMedCLIP ensemble."""
    written: dict[str, Path] = {}
    curves = [m for m in result.methods if m.val_per_site]
    if curves:
        panels = {site: {m.label: m.val_per_site.get(site, []) for m in curves} for site in result.sites}
        markers = {
            site: {
                f"{m.label} test @ {m.selected_round}": (float(m.selected_round), m.per_site[site]["accuracy"])
                for m in curves
                if m.selected_round is not None and site in m.per_site and m.kind == "method"
            }
            for site in result.sites
        }
        written["accuracy_plot"] = plots.line_panels(
            out_dir / PLOTS["Accuracy per round"],
            "Validation accuracy per round (stars: test accuracy at the selected round)",
            panels,
            ylabel="accuracy",
            markers=markers,
            percent=True,
        )
    uploads = {m.label: [float(b) for b in m.upload_per_round] for m in result.methods if m.upload_per_round}
    if uploads:
        written["upload_plot"] = plots.line_panels(
            out_dir / PLOTS["Upload per round"],
            "Bytes uploaded per round (all sites)",
            {"all sites": uploads},
            ylabel="bytes",
            log_y=True,
        )
    main = next((m for m in result.methods if m.key == "fedmedclip" and m.calibration), None)
    if main is not None and main.calibration is not None:
        bins = main.calibration["reliability"]
        written["reliability_plot"] = plots.reliability_diagram(
            out_dir / PLOTS["Reliability of the FedMedCLIP ensemble"],
            "FedMedCLIP ensemble, test splits",
            {
                f"uncalibrated (ECE {percent(main.calibration['test_ece_before'])}%)": bins["uncalibrated"],
                f"temperature-scaled (ECE {percent(main.calibration['test_ece_after'])}%)": bins["calibrated"],
            },
        )
    return written


def _calibration_table(result: ExperimentResult) -> TableSpec | None:
    main = next((m for m in result.methods if m.key == "fedmedclip" and m.calibration), None)
    if main is None or main.calibration is None:
        return None
    spec = TableSpec(
        "Calibration of the FedMedCLIP ensemble (temperature per site)",
        ["site", "T", "val ECE before", "val ECE after", "test ECE before", "test ECE after"],
        caption="ECE in %, 15 equal-width bins. T is fitted on each site's validation split (what the agent "
        "stores in its bundle); the test columns judge it on images it was not fitted on.",
    )
    for site, row in main.calibration["per_site"].items():
        spec.rows.append(
            [
                site,
                f"{row['temperature']:.2f}",
                percent(row["val_ece_before"]),
                percent(row["val_ece_after"]),
                percent(row["test_ece_before"]),
                percent(row["test_ece_after"]),
            ]
        )
    return spec


def _clean(value: Any) -> Any:
    """JSON-safe: NaN (an average over no site) becomes null, tuples lists, paths strings."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
