"""The folders depend one way: fusion knows no acquisition, acquisition no simulator (DESIGN.md, "Shape")."""
from __future__ import annotations

import ast

import pytest

from tests.conftest import REPO_ROOT


def imported_modules(path) -> set[str]:
    """Every module a Python file imports, at any depth (lazy imports inside functions included)."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


@pytest.mark.parametrize("folder,forbidden", [
    ("acquisition", ("simulators",)),           # simulated parts register in the rig registry
    ("fusion", ("acquisition", "devices", "simulators")),  # the engine never talks to devices
])
def test_a_folder_imports_nothing_from_the_folders_it_must_not_know(folder, forbidden):
    offenders = {}
    for path in sorted((REPO_ROOT / folder).rglob("*.py")):
        bad = sorted(m for m in imported_modules(path) if m.split(".")[0] in forbidden)
        if bad:
            offenders[str(path.relative_to(REPO_ROOT))] = bad
    assert offenders == {}
