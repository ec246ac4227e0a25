"""Docker Swarm through one manager's engine: the docker CLI with `--host` (ssh:// is the
CLI's own SSH transport; unix:// a local socket). Nothing here knows mailstack's services."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailstack.adapters import process
from mailstack.errors import ExternalCommandFailed

INSPECT_TIMEOUT = 60
DEPLOY_TIMEOUT = 600


@dataclass(frozen=True)
class SwarmNode:
    hostname: str
    state: str  # ready, down, unknown
    availability: str  # active, pause, drain
    manager: str  # Leader, Reachable, Unreachable, or "" for a worker
    labels: dict[str, str]


@dataclass(frozen=True)
class Engine:
    url: str

    def is_manager(self) -> bool:
        """Whether this engine answers and manages a swarm (it can deploy)."""
        try:
            answer = self._docker("info", "--format", "{{.Swarm.ControlAvailable}}")
        except ExternalCommandFailed:
            return False
        return answer.strip() == "true"

    def nodes(self) -> list[SwarmNode]:
        ids = self._docker("node", "ls", "--quiet").split()
        if not ids:
            return []
        listed = json.loads(self._docker("node", "inspect", *ids))
        return [_node(entry) for entry in listed]

    def set_labels(self, hostname: str, add: Mapping[str, str], remove: list[str]) -> None:
        options: list[str] = []
        for key, value in sorted(add.items()):
            options += ["--label-add", f"{key}={value}"]
        for key in remove:
            options += ["--label-rm", key]
        if options:
            self._docker("node", "update", *options, hostname)

    def deploy(self, stack_file: Path, project: str, *, resolve_images: bool) -> str:
        """`docker stack deploy`: creates or updates every service, prunes the ones dropped."""
        return self._docker(
            "stack", "deploy", "--prune",
            "--resolve-image", "always" if resolve_images else "never",
            "--compose-file", str(stack_file), project,
            timeout=DEPLOY_TIMEOUT,
        )  # fmt: skip

    def services(self, project: str) -> list[dict[str, Any]]:
        """The stack's services as `docker stack services` lists them (Name, Mode, Replicas…)."""
        listed = self._docker("stack", "services", "--format", "{{json .}}", project)
        return [json.loads(line) for line in listed.splitlines() if line.strip()]

    def tasks(self, project: str) -> list[dict[str, Any]]:
        """The stack's tasks, current and past (Name, Node, DesiredState, CurrentState, Error)."""
        listed = self._docker(
            "stack", "ps", "--no-trunc", "--format", "{{json .}}", project
        )  # fmt: skip
        return [json.loads(line) for line in listed.splitlines() if line.strip()]

    def remove(self, project: str) -> None:
        self._docker("stack", "rm", project)

    def _docker(self, *args: str, timeout: float = INSPECT_TIMEOUT) -> str:
        done = process.run(
            ["docker", "--host", self.url, *args],
            timeout=timeout,
            what=f"docker {args[0]} {args[1] if len(args) > 1 else ''} on {self.url}".strip(),
        )
        return done.stdout.decode(errors="replace")


def _node(entry: Mapping[str, Any]) -> SwarmNode:
    spec = entry.get("Spec") or {}
    manager = entry.get("ManagerStatus") or {}
    leader = "Leader" if manager.get("Leader") else str(manager.get("Reachability", "")).title()
    return SwarmNode(
        hostname=str((entry.get("Description") or {}).get("Hostname", "")),
        state=str((entry.get("Status") or {}).get("State", "unknown")),
        availability=str(spec.get("Availability", "")),
        manager=leader if manager else "",
        labels=dict(spec.get("Labels") or {}),
    )
