"""The repository stands alone: nothing it tracks points at files outside it, and the design document that
code comments cite as ``docs/design.md §N`` keeps its section numbering."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
# Spelled in pieces so that this file does not match itself.
OUTSIDE_POINTERS = ("shared" + "/", "DESIGN" + ".md")
SECTIONS = {
    1: "Overview",
    2: "Repository layout and layering rules",
    3: "The method",
    4: "Wire protocol and round life",
    5: "Persistence and data model",
    6: "Security model",
    7: "The personalised bundle format",
    8: "Data",
    9: "Configuration, CLI and logs",
    10: "Tests and environment",
    11: "Performance targets and where they are measured",
}
# A code comment citing the external design file by its old name and a section number: the coordinator's
# sweep rewrites these to "docs/design.md §N" once every branch has merged.
_OLD_CITATION = re.compile(re.escape(OUTSIDE_POINTERS[1]) + r"\s*§\d+")


def _tracked_files() -> list[Path]:
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"not a git checkout: {error}")
    names = [name for name in listing.decode("utf-8").split("\0") if name]
    return [ROOT / name for name in names if not name.endswith(".lock") and (ROOT / name).is_file()]


def _offending_lines() -> list[tuple[str, int, str]]:
    found = []
    for path in _tracked_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary files (images, fixtures) cannot hold a textual pointer
        for number, line in enumerate(text.splitlines(), start=1):
            if any(pointer in line for pointer in OUTSIDE_POINTERS):
                found.append((path.relative_to(ROOT).as_posix(), number, line.strip()))
    return found


def test_docs_and_readme_point_only_inside_the_repository():
    """README.md and docs/ are done by hand; they must already be clean."""
    offenders = [o for o in _offending_lines() if o[0] == "README.md" or o[0].startswith("docs/")]
    assert not offenders, "\n".join(f"{path}:{number}: {line}" for path, number, line in offenders)


def test_nothing_but_old_design_citations_points_outside_the_repository():
    """Any pointer outside the repository other than an old-style design citation in a code comment."""
    offenders = [o for o in _offending_lines() if not _OLD_CITATION.search(o[2]) or OUTSIDE_POINTERS[0] in o[2]]
    assert not offenders, "\n".join(f"{path}:{number}: {line}" for path, number, line in offenders)


def test_no_tracked_file_points_outside_the_repository():
    offenders = _offending_lines()
    assert not offenders, "\n".join(f"{path}:{number}: {line}" for path, number, line in offenders)


def test_the_design_document_has_every_numbered_section():
    headings = re.findall(r"^## §(\d+) (.+)$", DESIGN.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert [int(number) for number, _ in headings] == sorted(SECTIONS), "sections must be §1..§11, in order"
    for number, title in headings:
        assert title.startswith(SECTIONS[int(number)]), f"§{number} is titled {title!r}"


def test_design_citations_in_code_name_existing_sections():
    """A comment citing "design.md §N" (old or new spelling) must name a section that exists."""
    cited = set()
    for path in _tracked_files():
        if path.suffix not in {".py", ".proto", ".md", ".yaml", ".toml", ".sh", ""}:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        cited.update(int(n) for n in re.findall(r"design\.md\W{0,3}\s*§(\d+)", text, flags=re.IGNORECASE))
    assert cited, "expected code and docs to cite the design document"
    assert cited <= set(SECTIONS), f"citations of missing sections: {sorted(cited - set(SECTIONS))}"
