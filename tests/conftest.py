"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailstack.stack.config import Config, validate_config

REFERENCE: dict[str, Any] = {
    "hostname": "mail.example.test",
    "domain": "example.test",
    "mode": "sandbox",
    "project": "reference",
    "features": {"antivirus": False},
}


@pytest.fixture
def reference_config() -> Config:
    return validate_config(REFERENCE)


@pytest.fixture
def stack_root(tmp_path: Path) -> Path:
    return tmp_path / "stack"
