"""Output files are named in one place (fusion/output_names.py): a renamed output cannot leave a
writer, a resumed batch or the live view looking for the old name."""
from __future__ import annotations

import ast

from tests.conftest import REPO_ROOT

NAMES = ("fused.tif", "depth.tif", "stack.ome.tif", "session.json", "focus_curve.png")


def _string_constants(tree: ast.AST) -> list[ast.Constant]:
    """String constants that are code, not docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings]


def test_only_output_names_spells_the_output_file_names():
    writers = [*(REPO_ROOT / "acquisition").rglob("*.py"), *(REPO_ROOT / "fusion").rglob("*.py"),
               REPO_ROOT / "run_session.py"]
    spelled = [f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {node.value!r}"
               for path in writers if path.name != "output_names.py"
               for node in _string_constants(ast.parse(path.read_text()))
               if any(name in node.value for name in NAMES)]
    assert not spelled, "output file names spelled outside fusion/output_names.py:\n" + "\n".join(spelled)
