"""The repository documents itself: code points to sections of `docs/design.md` that exist, and to
no document outside the repository; every relative link of the README and `docs/` reaches an
existing file and heading; the README stays a short tour."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", flags=re.M | re.S)


def anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", markdown.read_text()), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def links(markdown: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(FENCE.sub("", markdown.read_text()))
        if not target.startswith(("http://", "https://", "mailto:"))
    ]


@pytest.mark.parametrize("document", DOCS, ids=lambda p: p.name)
def test_every_relative_link_reaches_a_file_and_heading(document: Path) -> None:
    for target in links(document):
        path, _, anchor = target.partition("#")
        file = (document.parent / path).resolve() if path else document
        assert file.exists(), f"{document.name}: {target}"
        if anchor:
            assert anchor in anchors(file), f"{document.name}: {target}"


def test_the_readme_is_a_tour_not_a_record() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 350


def tracked_text_files() -> list[Path]:
    names = subprocess.run(
        ["git", "ls-files", "*.py", "*.sql", "*.md", "*.yaml", "*.yml", "*.toml", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in names]


def test_references_to_the_design_document_name_sections_it_has() -> None:
    sections = set(re.findall(r"^## (\d+)\. ", (ROOT / "docs" / "design.md").read_text(), re.M))
    cited = {
        (path.relative_to(ROOT), number)
        for path in tracked_text_files()
        for number in re.findall(r"docs/design\.md`? §(\d+)", path.read_text())
    }
    assert cited, "the code cites the design document"
    assert {c for c in cited if c[1] not in sections} == set()
    elsewhere = [
        path.relative_to(ROOT)
        for path in tracked_text_files()
        if "DESIGN" in path.read_text() and path != Path(__file__).resolve()
    ]
    assert elsewhere == []
