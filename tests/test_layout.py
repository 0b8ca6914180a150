"""The parts import downwards only (docs/design.md §2): `core` imports none of ours, `serving` and
`pipelines` import `core` and not each other (nor Dagster, nor FastAPI, across), and only `mdp`
sits on top of everything."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"core", "mdp", "serving", "pipelines"}
FORBIDDEN = {
    "core": {"mdp", "serving", "pipelines", "fastapi", "dagster"},
    "serving": {"mdp", "pipelines", "dagster"},
    "pipelines": {"mdp", "serving", "fastapi"},
}


def imported_packages(path: Path) -> set[str]:
    """The top-level packages a module imports, wherever in it (functions included)."""
    packages = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            packages |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            packages.add(node.module.split(".")[0])
    return packages


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_a_part_imports_nothing_above_or_beside_it(part: str) -> None:
    modules = sorted((ROOT / part).rglob("*.py"))
    assert modules
    crossings = {
        f"{path.relative_to(ROOT)} imports {package}"
        for path in modules
        for package in imported_packages(path) & FORBIDDEN[part]
    }
    assert crossings == set()


def test_the_checks_see_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from mdp.cli import main\n    import serving.app\n")
    assert imported_packages(module) & OURS == {"mdp", "serving"}


def test_routers_share_through_dependencies_not_through_each_other() -> None:
    crossings = {
        f"{path.name} imports {node.module}"
        for path in sorted((ROOT / "serving" / "routers").glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("serving.routers")
    }
    assert crossings == set()
