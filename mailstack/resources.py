"""Where the shipped templates and image build contexts are, installed or in a source tree."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _shipped(name: str) -> Path:
    # Installed: force-included inside the package. Source tree: at the repo's top.
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"mailstack is installed without its {name}/ directory")


def templates_dir() -> Path:
    return _shipped("templates")


def build_contexts_dir() -> Path:
    return _shipped("compose")


def package_dir() -> Path:
    """mailstack's own package (the admin image runs it)."""
    return _PACKAGE


def migrations_dir() -> Path:
    return _PACKAGE / "migrations"
