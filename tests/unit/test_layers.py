"""The layers point one way (docs/architecture.md): the CLI calls the core, the core calls
the adapters to external programs, never the other way round."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "mailstack"
ADAPTERS = {"process", "compose", "docker", "psql"}
# What an adapter may know of the rest: the errors it raises, the service names it addresses
# and the password-hash shape psql checks before a value reaches stdin.
ADAPTER_MAY_IMPORT = ADAPTERS | {"errors", "services", "passwords"}
UI_LIBRARIES = {"typer", "rich", "click"}


def _imports(path: Path) -> set[str]:
    """Top-level names imported: 'mailstack.x' as 'x', 'mailstack.cli...' as 'cli', others
    by their first component."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
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


def _core_modules() -> dict[str, Path]:
    return {path.stem: path for path in PACKAGE.glob("*.py") if path.stem != "__main__"}


def test_adapters_know_nothing_of_the_core_or_the_cli() -> None:
    for name in ADAPTERS:
        imported = _imports(PACKAGE / f"{name}.py")
        mailstack_names = imported & set(_core_modules()) | (imported & {"cli"})
        assert mailstack_names <= ADAPTER_MAY_IMPORT, (name, mailstack_names - ADAPTER_MAY_IMPORT)


def test_the_core_never_imports_the_cli_nor_a_terminal_library() -> None:
    for name, path in _core_modules().items():
        imported = _imports(path)
        assert "cli" not in imported, name
        assert not imported & UI_LIBRARIES, (name, imported & UI_LIBRARIES)


def test_the_checker_sees_a_violation() -> None:
    # The rule is only as good as the parser: an upward import must show up.
    sample = PACKAGE.parent / "tests" / "unit" / "data" / "layer_violation.py.txt"
    assert {"cli", "typer"} <= _imports(sample)
