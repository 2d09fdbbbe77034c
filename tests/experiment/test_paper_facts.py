"""The paper's published figures live in ``fedmedclip/experiment/paper_facts.json`` and reach the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedmedclip.experiment import paper, report

FACTS = Path(paper.__file__).with_name(paper.FACTS_FILE)


def test_the_facts_file_is_the_source_of_every_printed_figure():
    facts = json.loads(FACTS.read_text(encoding="utf-8"))
    citation = facts["citation"]
    assert (citation["venue"], citation["arxiv"]) == ("AAAI 2026", "2511.07929")
    assert citation["short"] == paper.CITATION and "2511.07929" in paper.CITATION
    methods = facts["isic2019"]["methods"]
    assert set(paper.ISIC2019) == set(methods) == {"zero_shot", "local_head", "fedclip", "fedavg", "fedmedclip"}
    for key, row in methods.items():
        published = paper.ISIC2019[key]
        assert published.method == row["method"]
        assert published.avg_acc == row.get("avg_acc")
        assert published.per_site_acc == (tuple(row["per_site_acc"]) if "per_site_acc" in row else None)
    assert paper.ISIC2019["fedmedclip"].avg_acc == 80.4
    assert paper.ISIC2019["fedavg"].communication_gb == 7.569
    assert paper.ablation_reference(True, True, True, True) == ("all losses + aggregation", 80.4)
    assert paper.ablation_reference(False, True, False, False) == ("head CE only, no aggregation", 67.77)
    assert paper.ablation_reference(False, False, False, False) is None


def test_the_published_table_shows_the_figures_with_their_citation():
    spec = report._paper_table(on_isic=True)
    assert paper.CITATION in spec.title and "NOT measured here" in spec.title
    rows = {row[0]: row for row in spec.rows}
    assert rows["FedMedCLIP"][1:9] == ["84.45", "71.92", "82.69", "84.31", "79.00", "79.40", "81.01", "80.40"]
    assert rows["FedAvg"][-3:] == ["95.58", "7.569", "notes+fig"]
    assert rows["FedCLIP"][1] == "—" and rows["FedCLIP"][-1] == "fig"
    assert "anterior-torso" in spec.caption


def test_a_malformed_fact_is_refused_with_its_name():
    with pytest.raises(ValueError, match="'fedmedclip' has unknown fields"):
        paper._row("fedmedclip", {"method": "FedMedCLIP", "avg_accuracy": 80.4}, paper.SOURCES)
    with pytest.raises(ValueError, match="source 'blog'"):
        paper._row("fedmedclip", {"method": "FedMedCLIP", "source": "blog"}, paper.SOURCES)
