"""Asking the real `docker compose config` whether a rendered stack is valid."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mailstack.stack.secrets import RELAY_PASSWORD, SECRET_NAMES


def require_compose_v2() -> None:
    """Skip where no Compose v2 is installed; CI must have it, so there it fails."""
    found = (
        shutil.which("docker") is not None
        and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    )
    if not found:
        if os.environ.get("CI"):
            pytest.fail("CI must have Docker Compose v2")
        pytest.skip("no Docker Compose v2 on this machine (CI has it)")


def assert_compose_accepts(rendered: dict[str, bytes], directory: Path) -> None:
    require_compose_v2()
    for path, content in rendered.items():
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_bytes(content)
    (directory / "secrets").mkdir()
    named = yaml.safe_load(rendered["compose.yaml"]).get("secrets") or {}
    for name in {*SECRET_NAMES, RELAY_PASSWORD, *named}:
        (directory / "secrets" / name).write_text("x\n")
    result = subprocess.run(
        ["docker", "compose", "--file", str(directory / "compose.yaml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
