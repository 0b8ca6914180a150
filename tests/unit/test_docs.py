"""The documentation holds together: the README stays a short tour, every relative link of the
README and `docs/` reaches an existing file and heading, and every `docs/design.md §N` pointer in
the code names a section that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
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


def test_design_pointers_name_existing_sections() -> None:
    design = (ROOT / "docs" / "design.md").read_text()
    sections = set(re.findall(r"^## (\d+)\.", design, flags=re.M))
    sources = [
        p
        for folder in ("core", "serving", "pipelines", "mdp", "sql", "tests", "docs")
        for p in (ROOT / folder).rglob("*")
        if p.suffix in {".py", ".sql", ".md"}
    ]
    pointers = {
        (p.relative_to(ROOT), number)
        for p in sources
        for number in re.findall(r"design\.md §(\d+)", p.read_text())
    }
    assert pointers, "no pointer found: the pattern is wrong"
    assert {(path, n) for path, n in pointers if n not in sections} == set()
