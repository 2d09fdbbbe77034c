"""``agent check`` and the start of ``agent run``: the site's data checked as training will read it.

The check itself is ``fedmedclip.data.check`` (no torch); this module ties it to the agent's settings, and
turns a blocked report into the one-line refusal ``agent run`` exits with, naming the files to look at.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fedmedclip.data.check import DataReport, check_site
from fedmedclip.logs import event
from hospital_agent.adapters import load_site_images, report_skipped
from hospital_agent.settings import AgentSettings

log = logging.getLogger("hospital_agent.data")


class DataBlockedError(ValueError):
    """The data check found blocking problems; the message names them and the files concerned."""

    def __init__(self, report: DataReport) -> None:
        self.report = report
        super().__init__(refusal(report))


def check_site_data(settings: AgentSettings, *, write_lists: bool = False, trust_cache: bool = False) -> DataReport:
    """List the site with its adapter and check every file. ``DatasetError`` when nothing can be listed.

    ``write_lists`` also logs the skipped files and writes ``<state_dir>/check-skipped.json`` (every skipped file
    with its reason, the adapter's and the decoder's), as ``agent run`` does so that a refused start leaves the
    full list behind. ``trust_cache`` (``agent run``) does not decode again a file whose content already has a
    vector in the embedding cache: the embedding pass decoded those very bytes, and decoding every image at
    every start doubled the start-up work. ``agent check`` decodes everything.
    """
    images = load_site_images(settings.data)
    report = check_site(
        images,
        site=settings.site,
        adapter=settings.data.adapter,
        root=settings.data.root,
        split_seed=settings.data.split_seed,
        workers=max(1, settings.embed_workers),
        decoded=_cached_digests(settings) if trust_cache else frozenset(),
    )
    if write_lists:
        skipped = [(Path(path), reason) for path, reason in report.skipped]
        report_skipped(skipped, settings.site, settings.state_dir, "check")
    return report


def _cached_digests(settings: AgentSettings) -> set[str]:
    """Digests the embedding cache holds vectors for; none when there is no cache yet (never creates one)."""
    if not settings.effective_cache_dir.is_dir():
        return set()  # first start: nothing cached, and no reason to import torch before the data is known good
    from fedmedclip.data.cache import CACHE_FILE, EmbeddingCache

    if not (settings.effective_cache_dir / CACHE_FILE).exists():
        return set()
    with EmbeddingCache(settings.effective_cache_dir) as cache:
        return cache.digests()


def log_report(report: DataReport) -> None:
    """One summary line, then one line per finding (the agent's log is the operator's view of a start)."""
    event(
        log,
        "data checked",
        site=report.site,
        images=report.usable,
        listed=report.listed,
        classes=len(report.classes),
        skipped=len(report.skipped),
        blocking=len(report.blocking),
    )
    for finding in report.findings:
        level = logging.ERROR if finding.severity == "blocking" else logging.WARNING
        event(log, "data finding", level, site=report.site, code=finding.code, detail=finding.message)


def refusal(report: DataReport) -> str:
    """Why training refuses this data, with the files: fits on one (long) line of a terminal or the journal."""
    problems = []
    for finding in report.blocking:
        named = not finding.paths or finding.paths[0] in finding.message
        files = "" if named else f" [files: {', '.join(finding.paths)}]"
        problems.append(f"{finding.code}: {finding.message}{files}")
    return (
        f"site {report.site}: the data check found {len(report.blocking)} blocking problem(s): "
        + " | ".join(problems)
        + " — run 'fedmedclip agent check --config ...' for the full report (docs/data.md)"
    )
