"""Our own modules import each other at module level: an import inside a function hides a cycle
from import-linter and from the reader (issue #16). Imports for type checking only are allowed."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNTIME = ("config", "core", "controller", "handlers", "ops", "runbooks")
FIRST_PARTY = set(RUNTIME) | {"infra", "local", "bench"}


def _first_party(node: ast.Import | ast.ImportFrom) -> bool:
    names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
    return any(n.split(".")[0] in FIRST_PARTY for n in names)


def _nested_imports(tree: ast.Module) -> list[int]:
    lines: list[int] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if in_function and isinstance(child, ast.Import | ast.ImportFrom) and _first_party(child):
                lines.append(child.lineno)
            visit(child, nested)

    visit(tree, False)
    return lines


def test_no_function_level_imports_of_our_own_modules():
    found = [f"{path.relative_to(REPO)}:{line}"
             for package in RUNTIME for path in sorted((REPO / package).rglob("*.py"))
             for line in _nested_imports(ast.parse(path.read_text(), str(path)))]
    assert found == []


def test_the_check_sees_an_import_inside_a_function():
    tree = ast.parse("def f():\n    from core.domain import models\n\nif TYPE_CHECKING:\n    import core\n")
    assert _nested_imports(tree) == [2]
