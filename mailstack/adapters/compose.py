"""The one adapter to `docker compose` (v2): explicit project name and file, list arguments."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from mailstack.adapters import process
from mailstack.adapters.docker import DOCKER
from mailstack.errors import DockerUnavailable

_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


@cache
def compose_command() -> tuple[str, ...]:
    """`docker compose` (plugin) or a v2 `docker-compose` binary; Compose v1 is refused."""
    candidates: list[tuple[str, ...]] = []
    if shutil.which("docker"):
        candidates.append(("docker", "compose"))
    if shutil.which("docker-compose"):
        candidates.append(("docker-compose",))
    if not candidates:
        raise DockerUnavailable("neither `docker compose` nor `docker-compose` is installed")
    seen: list[str] = []
    for candidate in candidates:
        result = process.run([*candidate, "version", "--short"], check=False, timeout=30)
        text = (result.stdout or b"").decode(errors="replace").strip()
        match = _VERSION.search(text)
        if result.returncode != 0 or not match:
            continue
        major = int(match.group(1))
        if major >= 2:
            return candidate
        seen.append(f"{' '.join(candidate)} {text}")
    if seen:
        raise DockerUnavailable(f"Compose v1 is not supported (found {', '.join(seen)}); need v2")
    raise DockerUnavailable("no working Compose v2 found")


@dataclass(frozen=True)
class ServiceState:
    service: str
    container: str
    state: str  # running, exited, …
    health: str  # healthy, unhealthy, starting, or "" when there is no healthcheck
    status: str  # docker's own words, e.g. "Up 3 minutes (healthy)"
    ports: tuple[str, ...]
    # Failed healthchecks in a row: Docker says "unhealthy" only after `retries` of them (30,
    # so that a slow start is waited for), but a sender meets the failure at the first one.
    failing_checks: int = 0
    last_check: str = ""  # what the last healthcheck printed (why it failed)


class Compose:
    """`docker compose -p PROJECT -f DIR/compose.yaml …` for one stack directory."""

    def __init__(self, project_dir: Path, project: str) -> None:
        self.project_dir = project_dir
        self.project = project

    def _base(self) -> list[str]:
        return [
            *compose_command(),
            "--project-name",
            self.project,
            "--project-directory",
            str(self.project_dir),
            "--file",
            str(self.project_dir / "compose.yaml"),
        ]

    def run(
        self,
        args: list[str],
        *,
        input: bytes | None = None,  # mirrors subprocess.run
        timeout: float = 600,
        check: bool = True,
        capture: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        return process.run(
            [*self._base(), *args],
            input=input,
            timeout=timeout,
            check=check,
            what=f"docker compose {args[0]}",
            capture=capture,
        )

    def stream(
        self, args: list[str], on_line: Callable[[str], None], *, timeout: float = 10**7
    ) -> tuple[int, str]:
        """Run `docker compose ARGS`, handing each stdout line to on_line as it comes;
        (exit code, stderr)."""
        return process.stream(
            [*self._base(), *args], on_line, timeout=timeout, what=f"docker compose {args[0]}"
        )

    def exec(
        self,
        service: str,
        argv: list[str],
        *,
        input: bytes | None = None,  # mirrors subprocess.run
        user: str | None = None,
        timeout: float = 60,
    ) -> bytes:
        """Run argv inside the running service container; return its stdout."""
        options = ["exec", "-T"]
        if user:
            options += ["--user", user]
        result = self.run([*options, service, *argv], input=input, timeout=timeout)
        return result.stdout

    def config_check(self) -> None:
        self.run(["config", "--quiet"], timeout=60)

    def ps(self) -> list[ServiceState]:
        result = self.run(["ps", "--all", "--format", "json"], timeout=60)
        return [_service_state(item) for item in _json_lines(result.stdout)]

    def running_services(self) -> set[str]:
        """The services whose container is running (healthy or not)."""
        return {state.service for state in self.ps() if state.state == "running"}

    def logs(self, service: str, tail: int = 40) -> str:
        result = self.run(["logs", "--no-color", "--tail", str(tail), service], check=False)
        return (result.stdout + result.stderr).decode(errors="replace")

    def ps_with_checks(self) -> list[ServiceState]:
        """`ps`, with each running container's last healthcheck from `docker inspect`."""
        states = self.ps()
        running = [s.container for s in states if s.state == "running" and s.health]
        if not running:
            return states
        checks: dict[str, tuple[int, str]] = {}
        for name, health in (DOCKER.health(running) or {}).items():
            if health is not None:
                log = health.get("Log") or [{}]
                output = str(log[-1].get("Output", "")).strip()
                checks[name] = (int(health.get("FailingStreak", 0)), output)
        return [
            replace(s, failing_checks=checks[s.container][0], last_check=checks[s.container][1])
            if s.container in checks
            else s
            for s in states
        ]

    def images(self) -> dict[str, str]:
        """{service: image reference} from the rendered compose file."""
        result = self.run(["config", "--format", "json"], timeout=60)
        document = json.loads(result.stdout)
        services: dict[str, Any] = document.get("services", {})
        return {name: str(spec.get("image", "")) for name, spec in services.items()}


def _json_lines(raw: bytes) -> list[dict[str, Any]]:
    text = raw.decode(errors="replace").strip()
    if not text:
        return []
    if text.startswith("["):  # older Compose v2 prints one array
        parsed: list[dict[str, Any]] = json.loads(text)
        return parsed
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _service_state(item: dict[str, Any]) -> ServiceState:
    publishers = item.get("Publishers") or []
    ports = tuple(
        sorted(
            {
                f"{p.get('URL')}:{p.get('PublishedPort')}->{p.get('TargetPort')}/{p.get('Protocol')}"
                for p in publishers
                if p.get("PublishedPort")
            }
        )
    )
    return ServiceState(
        service=str(item.get("Service", "")),
        container=str(item.get("Name", "")),
        state=str(item.get("State", "")),
        health=str(item.get("Health", "")),
        status=str(item.get("Status", "")),
        ports=ports,
    )
