"""Published figures (shared/PAPER-FACTS.md) printed beside our own, always labelled as the paper's.

Sources: "notes" = third-party notes on Wu & Chaddad (AAAI 2026, arXiv 2511.07929), not checked against the
PDF; "fig" = read by eye from the reference repository's figures (±1–2 points). Setting: ISIC2019, ViT-B/32
with OpenAI weights, RTX 4090. Our synthetic runs are a different dataset: the numbers are context, not a
target for them.
"""

from __future__ import annotations

from dataclasses import dataclass

CITATION = "Wu & Chaddad, AAAI 2026 (arXiv 2511.07929)"
SETTING = "ISIC2019, ViT-B/32 openai, 6 anatomical sites + held-out"
# The reference's ISIC2019 domain order; C1..C6 in the paper's table presumably follow it (not verified).
SITE_ORDER = ("anterior-torso", "head-neck", "lower-extremity", "palms-soles", "posterior-torso", "upper-extremity")


@dataclass(frozen=True)
class PaperRow:
    method: str  # the paper's name for it
    per_site_acc: tuple[float, ...] | None = None  # C1..C6, %
    holdout_acc: float | None = None
    avg_acc: float | None = None
    macro_f1: float | None = None  # ISIC2019 macro-F1 average, % (fig)
    compute_min: float | None = None
    communication_gb: float | None = None
    source: str = "notes"


# Our method keys → the paper's rows. FedCLIP and local-only appear only in the reference figures.
ISIC2019: dict[str, PaperRow] = {
    "zero_shot": PaperRow(
        "CLIP zero-shot", (31.95, 23.98, 24.31, 17.71, 20.12, 33.47), 17.17, 24.1, macro_f1=8.0, source="notes+fig"
    ),
    "local_head": PaperRow("local only", macro_f1=38.0, source="fig"),
    "fedclip": PaperRow("FedCLIP", macro_f1=50.0, source="fig"),
    "fedavg": PaperRow(
        "FedAvg",
        (78.35, 60.47, 76.39, 58.33, 75.00, 71.77),
        84.54,
        72.12,
        macro_f1=51.0,
        compute_min=95.58,
        communication_gb=7.569,
        source="notes+fig",
    ),
    "fedmedclip": PaperRow(
        "FedMedCLIP",
        (84.45, 71.92, 82.69, 84.31, 79.00, 79.40),
        81.01,
        80.4,
        macro_f1=64.5,
        compute_min=68.56,
        communication_gb=0.063,
        source="notes+fig",
    ),
}

# Ablation (ISIC2019 average accuracy, notes), keyed by (contrastive, head CE, KD, aggregation).
ABLATIONS: dict[tuple[bool, bool, bool, bool], tuple[str, float]] = {
    (True, False, False, True): ("contrastive only + aggregation", 71.94),
    (True, True, False, True): ("contrastive + head CE + aggregation", 78.44),
    (False, True, False, False): ("head CE only, no aggregation", 67.77),
    (True, True, True, False): ("all losses, no aggregation", 70.41),
    (True, True, True, True): ("all losses + aggregation", 80.4),
}


def ablation_reference(contrastive: bool, head_ce: bool, kd: bool, aggregate: bool) -> tuple[str, float] | None:
    """The paper's ablation figure for this combination of switches, if it reports one."""
    return ABLATIONS.get((contrastive, head_ce, kd, aggregate))
