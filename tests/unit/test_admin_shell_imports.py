"""The admin service's shells (compose/admin/*.py) import each other by name; they run only in
the admin image (FastAPI from Debian), so nothing else loads them before the image starts.
Each name one shell imports from another must be defined there, or the service does not
start at all."""

from __future__ import annotations

import ast
from pathlib import Path

SHELLS = Path(__file__).resolve().parents[2] / "compose" / "admin"


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def test_every_name_a_shell_imports_from_another_shell_is_defined_there() -> None:
    trees = {path.stem: ast.parse(path.read_text()) for path in SHELLS.glob("*.py")}
    assert {"adminapi", "webcommon", "webdirectory"} <= set(trees)
    missing = []
    for name, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module in trees and node.level == 0:
                defined = _top_level_names(trees[node.module])
                missing += [
                    f"{name}: {node.module}.{alias.name}"
                    for alias in node.names
                    if alias.name not in defined
                ]
    assert missing == []


def test_every_attribute_a_shell_reads_of_another_shell_is_defined_there() -> None:
    # `import webcommon as web` ... `web.run_as(...)`: the attribute must exist.
    trees = {path.stem: ast.parse(path.read_text()) for path in SHELLS.glob("*.py")}
    missing = []
    for name, tree in trees.items():
        aliases = {
            alias.asname or alias.name: alias.name
            for node in tree.body
            if isinstance(node, ast.Import)
            for alias in node.names
            if alias.name in trees
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
            ):
                module = aliases[node.value.id]
                if node.attr not in _top_level_names(trees[module]):
                    missing.append(f"{name}: {module}.{node.attr}")
    assert missing == []
