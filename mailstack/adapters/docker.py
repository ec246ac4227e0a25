"""The one adapter to the Docker engine's own CLI (`docker`; Compose has adapters.compose):
images, one-shot containers, volumes, networks, the engine's facts. Every call is an argument
list through mailstack.adapters.process; nothing else in mailstack spells a `docker` command line.

`Engine` is what the core needs; `Docker` is the real one, and tests/unit/fakes.py holds the
one fake. A one-shot container is described as data (`OneShot`), so the hardening every job
shares is written once and its command line is a pure function.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mailstack.adapters import process
from mailstack.errors import DockerUnavailable, ExternalCommandFailed

INSPECT_TIMEOUT = 60
NETWORK_FORMAT = "{{.Name}} {{range .IPAM.Config}}{{.Subnet}} {{end}}"


@dataclass(frozen=True)
class Bind:
    """A host path (or a named volume) inside a one-shot container."""

    source: str
    target: str
    read_only: bool = False

    def option(self) -> str:
        return f"{self.source}:{self.target}{':ro' if self.read_only else ''}"


@dataclass(frozen=True)
class OneShot:
    """`docker run --rm` of one image for one job: no new privileges, every capability
    dropped but those named, and Docker's log driver off unless asked (a job's output, such
    as a decrypted dump, goes to mailstack only, never to a log file on the host's disk)."""

    image: str
    command: tuple[str, ...] = ()
    entrypoint: str | None = None
    name: str | None = None
    hostname: str | None = None
    network: str = "none"
    binds: tuple[Bind, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    tmpfs: tuple[str, ...] = ()
    cap_add: tuple[str, ...] = ()
    read_only: bool = False
    hardened: bool = True  # False only for the package resolver, which runs apt as root
    log: bool = False

    def argv(self) -> list[str]:
        argv = ["docker", "run", "--rm"]
        if self.name:
            argv += ["--name", self.name]
        if self.hostname:
            argv += ["--hostname", self.hostname]
        if self.hardened:
            argv += ["--security-opt", "no-new-privileges:true", "--cap-drop", "ALL"]
        for capability in self.cap_add:
            argv += ["--cap-add", capability]
        if self.read_only:
            argv.append("--read-only")
        for mount in self.tmpfs:
            argv += ["--tmpfs", mount]
        argv += ["--network", self.network]
        if not self.log:
            argv += ["--log-driver", "none"]
        for name, value in self.env:
            argv += ["--env", f"{name}={value}"]
        for bind in self.binds:
            argv += ["--volume", bind.option()]
        if self.entrypoint:
            argv += ["--entrypoint", self.entrypoint]
        return [*argv, self.image, *self.command]


@dataclass(frozen=True)
class Build:
    """`docker build` of one context."""

    context: Path
    tag: str
    dockerfile: Path | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: tuple[str, ...] = ()  # "key=value", or "key" for an empty label

    def argv(self) -> list[str]:
        argv = ["docker", "build", "--tag", self.tag]
        if self.dockerfile is not None:
            argv += ["--file", str(self.dockerfile)]
        for name, value in self.build_args.items():
            argv += ["--build-arg", f"{name}={value}"]
        for label in self.labels:
            argv += ["--label", label]
        return [*argv, str(self.context)]


class Engine(Protocol):
    """What mailstack asks of the Docker engine."""

    def image_id(self, reference: str) -> str | None: ...
    def has_image(self, reference: str) -> bool: ...
    def image_labels(self, reference: str) -> dict[str, str]: ...
    def container_image_id(self, container: str) -> str | None: ...
    def health(self, containers: Sequence[str]) -> dict[str, dict[str, Any] | None] | None: ...
    def volume_exists(self, name: str) -> bool: ...
    def create_volume(self, name: str, labels: Mapping[str, str]) -> None: ...
    def remove_volume(self, name: str) -> None: ...
    def remove_container(self, name: str) -> None: ...
    def root_dir(self) -> str | None: ...
    def server_version(self) -> str: ...
    def network_subnets(self, exclude_prefix: str) -> list[tuple[str, list[str]]]: ...

    def run(
        self,
        job: OneShot,
        *,
        input: bytes | None = None,  # mirrors subprocess.run
        timeout: float,
        what: str,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]: ...

    def stream(
        self, job: OneShot, on_line: Callable[[str], None], *, what: str
    ) -> tuple[int, str]: ...

    def build(self, build: Build, *, timeout: float, what: str) -> None: ...
    def import_rootfs(self, tar: bytes, reference: str) -> None: ...
    def pull(self, reference: str) -> None: ...


class Docker:
    """The real engine, through the `docker` CLI."""

    def image_id(self, reference: str) -> str | None:
        """The image's id, or None when the engine does not have it."""
        result = _docker(["image", "inspect", "--format", "{{.Id}}", reference], check=False)
        return result.stdout.decode().strip() or None if result.returncode == 0 else None

    def has_image(self, reference: str) -> bool:
        return self.image_id(reference) is not None

    def image_labels(self, reference: str) -> dict[str, str]:
        result = _docker(
            ["image", "inspect", "--format", "{{json .Config.Labels}}", reference],
            what=f"docker image inspect {reference}",
        )
        labels = json.loads(result.stdout or b"null") or {}
        return {str(key): str(value) for key, value in labels.items()}

    def container_image_id(self, container: str) -> str | None:
        result = _docker(["inspect", "--format", "{{.Image}}", container], check=False)
        return result.stdout.decode().strip() or None if result.returncode == 0 else None

    def health(self, containers: Sequence[str]) -> dict[str, dict[str, Any] | None] | None:
        """{container: its health state (None: no healthcheck)}; None when inspect fails."""
        result = _docker(
            ["inspect", "--format", "{{.Name}} {{json .State.Health}}", *containers], check=False
        )
        if result.returncode != 0:
            return None
        found: dict[str, dict[str, Any] | None] = {}
        for line in result.stdout.decode(errors="replace").splitlines():
            name, _, health_json = line.partition(" ")
            try:
                health = json.loads(health_json)
            except ValueError:
                continue
            found[name.lstrip("/")] = health if isinstance(health, dict) else None
        return found

    def volume_exists(self, name: str) -> bool:
        return _docker(["volume", "inspect", name], check=False).returncode == 0

    def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        options = [
            option for key, value in labels.items() for option in ("--label", f"{key}={value}")
        ]
        _docker(["volume", "create", *options, name], what="docker volume create")

    def remove_volume(self, name: str) -> None:
        _docker(["volume", "rm", "--force", name], check=False)

    def remove_container(self, name: str) -> None:
        _docker(["rm", "--force", name], check=False)

    def root_dir(self) -> str | None:
        result = _docker(["info", "--format", "{{.DockerRootDir}}"], check=False, timeout=30)
        return result.stdout.decode().strip() or None if result.returncode == 0 else None

    def server_version(self) -> str:
        """The engine's version; "" when it does not answer."""
        result = _docker(["version", "--format", "{{.Server.Version}}"], check=False, timeout=30)
        return result.stdout.decode(errors="replace").strip() if result.returncode == 0 else ""

    def network_subnets(self, exclude_prefix: str) -> list[tuple[str, list[str]]]:
        """(name, subnets) of every Docker network but host, none and those whose name
        starts with exclude_prefix (a stack's own)."""
        result = _docker(["network", "ls", "--format", "{{.Name}}"], check=False)
        names = [
            name
            for name in result.stdout.decode().split()
            if not name.startswith(exclude_prefix) and name not in ("host", "none")
        ]
        if not names:
            return []
        inspect = _docker(["network", "inspect", "--format", NETWORK_FORMAT, *names], check=False)
        found = []
        for line in inspect.stdout.decode().splitlines():
            name, *subnets = line.split()
            found.append((name, subnets))
        return found

    def run(
        self,
        job: OneShot,
        *,
        input: bytes | None = None,  # mirrors subprocess.run
        timeout: float,
        what: str,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        return process.run(job.argv(), input=input, timeout=timeout, what=what, check=check)

    def stream(self, job: OneShot, on_line: Callable[[str], None], *, what: str) -> tuple[int, str]:
        return process.stream(job.argv(), on_line, what=what)

    def build(self, build: Build, *, timeout: float, what: str) -> None:
        process.run(build.argv(), timeout=timeout, what=what)

    def import_rootfs(self, tar: bytes, reference: str) -> None:
        _docker(["import", "-", reference], input=tar, timeout=600, what="docker import")

    def pull(self, reference: str) -> None:
        _docker(["pull", reference], timeout=1800, what=f"docker pull {reference}")


def available() -> None:
    """Raise DockerUnavailable unless the engine answers."""
    try:
        _docker(["info", "--format", "{{.ServerVersion}}"], timeout=30)
    except ExternalCommandFailed as e:
        raise DockerUnavailable(
            e.output.strip().splitlines()[-1] if e.output else "no answer"
        ) from None


def _docker(
    args: list[str],
    *,
    check: bool = True,
    timeout: float = INSPECT_TIMEOUT,
    what: str | None = None,
    input: bytes | None = None,  # mirrors subprocess.run
) -> subprocess.CompletedProcess[bytes]:
    return process.run(
        ["docker", *args], input=input, check=check, timeout=timeout, what=what or "docker"
    )


DOCKER = Docker()
