"""Docker Swarm through one manager's engine: the docker CLI with `--host` (ssh:// is the
CLI's own SSH transport; unix:// a local socket). Nothing here knows mailstack's services."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailstack.adapters import process
from mailstack.errors import ExternalCommandFailed

INSPECT_TIMEOUT = 60
DEPLOY_TIMEOUT = 600
LOAD_TIMEOUT = 1800  # every image into one node, over SSH
REMOVE_TRIES = 10
REMOVE_RETRY_SECONDS = 3.0


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
        """`docker stack rm`, again while a network is still in use by tasks shutting down
        (the CLI then fails after removing the services); done once nothing is left."""
        for attempt in range(1, REMOVE_TRIES + 1):
            try:
                self._docker("stack", "rm", project)
                return
            except ExternalCommandFailed as failure:
                if "nothing found in stack" in failure.output.lower():
                    return
                if attempt == REMOVE_TRIES:
                    raise
                time.sleep(REMOVE_RETRY_SECONDS)

    def running_task(self, service: str) -> RunningTask | None:
        """A running task of the service (Swarm's name: project_service), with the node it
        runs on and its container; None while none runs."""
        listed = self._docker(
            "service", "ps", "--no-trunc", "--filter", "desired-state=running",
            "--format", "{{.ID}} {{.Node}} {{.CurrentState}}", service,
        )  # fmt: skip
        for line in listed.splitlines():
            task, node, state = [*line.split(" ", 2), "", ""][:3]
            if not state.startswith("Running"):
                continue
            container = self._docker(
                "inspect", "--format", "{{.Status.ContainerStatus.ContainerID}}", task
            ).strip()
            if container:
                return RunningTask(node, container)
        return None

    def exec(
        self,
        container: str,
        argv: list[str],
        *,
        input: bytes | None = None,  # mirrors subprocess.run
        user: str | None = None,
        timeout: float = 60,
    ) -> bytes:
        """Run argv in a container of this engine; its stdout."""
        options = ["exec", "-i"] if input is not None else ["exec"]
        if user:
            options += ["--user", user]
        return self._run(*options, container, *argv, input=input, timeout=timeout)

    def images(self) -> set[str]:
        """The repository:tag of every image this engine holds."""
        listed = self._docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}")
        return {line for line in listed.split() if line}

    def load_from_local(self, images: list[str]) -> None:
        """Copy images from the engine mailstack runs on (which built them) into this one,
        as `docker save | docker load`, streamed."""
        process.pipe(
            ["docker", "save", *images],
            ["docker", "--host", self.url, "load", "--quiet"],
            timeout=LOAD_TIMEOUT,
            what=f"docker save | docker load on {self.url}",
        )

    def _docker(self, *args: str, timeout: float = INSPECT_TIMEOUT) -> str:
        return self._run(*args, timeout=timeout).decode(errors="replace")

    def _run(self, *args: str, input: bytes | None = None, timeout: float) -> bytes:
        done = process.run(
            ["docker", "--host", self.url, *args],
            input=input,
            timeout=timeout,
            what=f"docker {args[0]} {args[1] if len(args) > 1 else ''} on {self.url}".strip(),
        )
        return done.stdout


@dataclass(frozen=True)
class RunningTask:
    node: str  # the node's hostname
    container: str


@dataclass(frozen=True)
class SwarmExecutor:
    """Runs a command in a service's running task, as Compose.exec does on one host (the
    psql adapter's Executor): the manager finds the task, the task's own node runs it."""

    manager: Engine
    project: str
    engines: Mapping[str, Engine]  # by node hostname

    def exec(
        self,
        service: str,
        argv: list[str],
        *,
        input: bytes | None = None,  # mirrors Compose.exec
        user: str | None = None,
        timeout: float = 60,
    ) -> bytes:
        task = self.manager.running_task(f"{self.project}_{service}")
        if task is None:
            raise ExternalCommandFailed(f"{service} on the cluster", "no task of it runs")
        engine = self.engines.get(task.node)
        if engine is None:
            raise ExternalCommandFailed(
                f"{service} on the cluster", f"it runs on {task.node}, not in cluster.nodes"
            )
        return engine.exec(task.container, argv, input=input, user=user, timeout=timeout)


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
