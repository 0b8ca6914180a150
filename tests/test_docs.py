"""The repository documents itself: code points to sections of `docs/design.md` that exist, and to
no document outside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
