"""The paper's published figures, printed beside our own and always labelled as the paper's.

The figures live as data in ``paper_facts.json`` beside this module (citation, sources and caveats
included); this module loads them once and offers them in the shapes the report needs. Sources: "notes" =
third-party notes on the paper, not checked against its PDF; "fig" = read by eye from the reference
repository's figures (±1–2 points). Setting: ISIC2019, ViT-B/32 with OpenAI weights, RTX 4090. Our synthetic
runs use other data: the numbers are context for them, not a target.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

FACTS_FILE = "paper_facts.json"


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


def load_facts() -> dict[str, Any]:
    """The parsed facts file shipped with the package."""
    text = resources.files("fedmedclip.experiment").joinpath(FACTS_FILE).read_text(encoding="utf-8")
    facts = json.loads(text)
    if not isinstance(facts, dict):
        raise ValueError(f"{FACTS_FILE} must hold a JSON object")
    return facts


def _row(key: str, data: dict[str, Any], sources: dict[str, Any]) -> PaperRow:
    known = set(PaperRow.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{FACTS_FILE}: method {key!r} has unknown fields {unknown}")
    row = PaperRow(**data)
    if row.source not in sources:
        raise ValueError(f"{FACTS_FILE}: method {key!r} names source {row.source!r}, not one of {sorted(sources)}")
    if row.per_site_acc is not None:
        row = PaperRow(**{**data, "per_site_acc": tuple(float(v) for v in row.per_site_acc)})
    return row


_FACTS = load_facts()
_ISIC = _FACTS["isic2019"]

CITATION: str = _FACTS["citation"]["short"]
SETTING: str = _FACTS["setting"]
SOURCES: dict[str, str] = dict(_FACTS["sources"])
# The reference's ISIC2019 domain order; C1..C6 in the paper's table presumably follow it (not verified).
SITE_ORDER: tuple[str, ...] = tuple(_ISIC["site_order"])

# Our method keys → the paper's rows. FedCLIP and local-only appear only in the reference figures.
ISIC2019: dict[str, PaperRow] = {key: _row(key, value, SOURCES) for key, value in _ISIC["methods"].items()}

# Ablation (ISIC2019 average accuracy, notes), keyed by (contrastive, head CE, KD, aggregation).
ABLATIONS: dict[tuple[bool, bool, bool, bool], tuple[str, float]] = {
    (bool(a["contrastive"]), bool(a["head_ce"]), bool(a["kd"]), bool(a["aggregate"])): (a["label"], float(a["avg_acc"]))
    for a in _ISIC["ablations"]
}


def ablation_reference(contrastive: bool, head_ce: bool, kd: bool, aggregate: bool) -> tuple[str, float] | None:
    """The paper's ablation figure for this combination of switches, if it reports one."""
    return ABLATIONS.get((contrastive, head_ce, kd, aggregate))
