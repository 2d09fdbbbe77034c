"""The simulation's reports: ``results.json`` and ``results.md`` as the experiment harness writes them, plus
plots of accuracy, bytes and the spread across sites per round (matplotlib, Agg: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path

from fedmedclip.experiment.report import _clean, human_bytes, percent
from fedmedclip.simulation.runner import SimulationOutcome

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
PLOTS = {"accuracy": "accuracy.png", "bytes": "bytes.png", "spread": "spread.png"}


def to_markdown(outcome: SimulationOutcome) -> str:
    config = outcome.config
    lines = [
        f"# Simulation `{config.name}`",
        "",
        f"- sites: {config.sites.count} ({config.sites.data.kind}, {config.sites.train_samples} train / "
        f"{config.sites.eval_samples} eval samples each, Dirichlet α={config.sites.dirichlet_alpha})",
        f"- rounds: {config.rounds}, participation {config.participation:g}, dropout {config.dropout:g}, "
        f"stragglers {config.stragglers:g}, weighting {config.weighting}, codec {config.codec.model_dump()}",
        f"- backend: {config.backend}, {config.num_shards} shard(s) of up to {config.shard_size} sites, "
        f"device {config.device}; wall time {outcome.wall_seconds:.1f} s",
        "",
        "## Rounds",
        "",
        "| round | trained | aggregated | dropped | late | uploaded | mean acc | p10 | p90 | site-rounds/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in outcome.rounds:
        acc = r.accuracy.get("ensemble_acc")
        cells = [
            str(r.round),
            str(r.trained),
            str(r.aggregated),
            str(r.dropped),
            str(r.stragglers),
            human_bytes(r.upload_bytes),
            percent(acc["mean"]) if acc else "–",
            percent(acc["p10"]) if acc else "–",
            percent(acc["p90"]) if acc else "–",
            f"{r.site_rounds_per_s:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Memory per shard",
        "",
        "| shard | sites | state held | peak RSS of its process |",
        "|---|---|---|---|",
        *(
            f"| {m.shard} | {m.sites} | {human_bytes(m.state_bytes)} | {human_bytes(m.peak_rss_bytes)} |"
            for m in outcome.memory
        ),
        "",
        "Accuracy is the ensemble (global FAM + each site's head) on each site's evaluation split; "
        "p10/p90 are across sites.",
        "",
    ]
    return "\n".join(lines)


def write_plots(outcome: SimulationOutcome, out_dir: Path) -> dict[str, Path]:
    try:
        import matplotlib
    except ImportError as error:
        raise ValueError("the plots need matplotlib: pip install 'fedmedclip[simulate]'") from error

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    evaluated = [r for r in outcome.rounds if r.accuracy]
    paths = {key: out_dir / name for key, name in PLOTS.items()}
    figure, axis = plt.subplots(figsize=(6, 4))
    for key, label in (("ensemble_acc", "ensemble"), ("zero_shot_acc", "zero-shot"), ("head_acc", "head")):
        axis.plot([r.round for r in evaluated], [r.accuracy[key]["mean"] for r in evaluated], marker="o", label=label)
    axis.set(xlabel="round", ylabel="mean accuracy over sites", title=f"{outcome.config.name}: accuracy")
    axis.legend()
    figure.tight_layout()
    figure.savefig(paths["accuracy"], dpi=100)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 4))
    rounds = [r.round for r in outcome.rounds]
    axis.bar(rounds, [r.upload_bytes / 2**20 for r in outcome.rounds], label="aggregated")
    axis.bar(
        rounds,
        [r.late_bytes / 2**20 for r in outcome.rounds],
        bottom=[r.upload_bytes / 2**20 for r in outcome.rounds],
        label="late (refused)",
    )
    axis.set(xlabel="round", ylabel="MiB uploaded", title=f"{outcome.config.name}: bytes per round")
    axis.legend()
    figure.tight_layout()
    figure.savefig(paths["bytes"], dpi=100)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 4))
    x = [r.round for r in evaluated]
    stats = [r.accuracy["ensemble_acc"] for r in evaluated]
    axis.fill_between(x, [s["min"] for s in stats], [s["max"] for s in stats], alpha=0.2, label="min–max")
    axis.fill_between(x, [s["p10"] for s in stats], [s["p90"] for s in stats], alpha=0.4, label="p10–p90")
    axis.plot(x, [s["median"] for s in stats], marker="o", label="median")
    axis.set(xlabel="round", ylabel="site accuracy", title=f"{outcome.config.name}: spread across sites")
    axis.legend()
    figure.tight_layout()
    figure.savefig(paths["spread"], dpi=100)
    plt.close(figure)
    return paths


def write_reports(outcome: SimulationOutcome, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / RESULTS_JSON, "markdown": out_dir / RESULTS_MD}
    paths["json"].write_text(json.dumps(_clean(outcome.to_json()), indent=2, allow_nan=False) + "\n")
    paths["markdown"].write_text(to_markdown(outcome))  # written before the plots, which may lack matplotlib
    paths.update(write_plots(outcome, out_dir))
    return paths
