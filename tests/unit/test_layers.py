"""The layers point one way (docs/architecture.md): the CLI calls the core, the core calls
the adapters to external programs, never the other way round; the shared modules at the
package's top depend on nothing of mailstack at run time."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mailstack"
SHARED = {"errors", "verdict", "units", "resources", "services"}
CORE = {
    "stack", "images", "runtime", "accounts", "mailauth", "tls", "backup", "identity", "api",
    "cluster",
}  # fmt: skip
UI_LIBRARIES = {"typer", "rich", "click"}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path) -> set[str]:
    """What a module imports at run time, as units of the layout: 'mailstack.tls.acme' is
    'tls', 'mailstack.errors' is 'errors', anything else its first component. Imports under
    `if TYPE_CHECKING:` are types only and create no dependency at run time."""
    found: set[str] = set()
    type_only: set[int] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            type_only.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mailstack":
                names = [f"mailstack.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        for name in names:
            parts = name.split(".")
            found.add(parts[1] if parts[0] == "mailstack" and len(parts) > 1 else parts[0])
    return found


def _modules(unit: str) -> list[Path]:
    if unit in SHARED:
        return [PACKAGE / f"{unit}.py"]
    return sorted((PACKAGE / unit).rglob("*.py"))


def _mailstack_units(path: Path) -> set[str]:
    return _imports(path) & (SHARED | CORE | {"adapters", "cli", "__version__"})


def test_every_module_belongs_to_a_layer() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert top == SHARED
    assert packages == CORE | {"adapters", "cli"}


def test_shared_modules_depend_on_nothing_of_mailstack() -> None:
    for unit in SHARED:
        assert _mailstack_units(PACKAGE / f"{unit}.py") <= {unit}, unit


def test_adapters_know_nothing_of_the_core_or_the_cli() -> None:
    # An adapter may know the errors it raises and the service names it addresses.
    for path in _modules("adapters"):
        upward = _mailstack_units(path) - {"adapters", "errors", "services"}
        assert not upward, (path.name, upward)


def test_the_core_never_imports_the_cli_nor_a_terminal_library() -> None:
    for unit in CORE:
        for path in _modules(unit):
            imported = _imports(path)
            assert "cli" not in imported, path
            assert not imported & UI_LIBRARIES, (path, imported & UI_LIBRARIES)


def test_the_checker_sees_a_violation() -> None:
    # The rule is only as good as the parser: an upward import must show up, and one under
    # TYPE_CHECKING must not.
    sample = PACKAGE.parent / "tests" / "unit" / "data" / "layer_violation.py.txt"
    imported = _imports(sample)
    assert {"cli", "typer"} <= imported
    assert "rich" not in imported
