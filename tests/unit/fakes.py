"""The stand-ins of unit tests: FakeContainers for the Compose adapter (exec, ps, run), a running
stack whose containers answer as each test says, and FakeEngine for the Docker adapter; both
record every call."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from mailstack.adapters import psql
from mailstack.adapters.compose import ServiceState
from mailstack.adapters.docker import Build, Engine, OneShot
from mailstack.errors import ExternalCommandFailed


class Call(NamedTuple):
    service: str
    argv: list[str]
    stdin: str
    user: str | None

    @property
    def text(self) -> str:
        """Where a marker is looked for: the SQL sent to psql, else the command line."""
        return self.stdin if self.service == "db" else " ".join(self.argv)

    def variables(self) -> dict[str, str]:
        """The caller's psql variables (--set=name=value) of this call; the two that say who
        acts are the adapter's own (actor())."""
        return {
            name: value
            for name, value in self._settings().items()
            if name not in psql.ACTOR_VARIABLES
        }

    def actor(self) -> psql.Actor | None:
        """Who this psql session said acts (psql.query's session line), if it said so."""
        settings = self._settings()
        if not all(name in settings for name in psql.ACTOR_VARIABLES):
            return None
        name, source = (settings[variable] for variable in psql.ACTOR_VARIABLES)
        return psql.Actor(name, source)

    def _settings(self) -> dict[str, str]:
        found = {}
        for argument in self.argv:
            if argument.startswith("--set="):
                name, _, value = argument.removeprefix("--set=").partition("=")
                found[name] = value
        return found


def _callers_stdin(service: str, argv: list[str], input: bytes | None) -> str:
    """What the caller sent: a psql session that says who acts must say it first, on the
    adapter's own line (psql.SESSION_PRELUDE); tests see what follows it."""
    text = (input or b"").decode()
    if service != "db" or not any(a.startswith(f"--set={psql.ACTOR_VARIABLES[0]}=") for a in argv):
        return text
    if not text.startswith(psql.SESSION_PRELUDE):
        raise AssertionError(f"a psql session with an actor must start with its line: {text!r}")
    return text.removeprefix(psql.SESSION_PRELUDE)


# What a container answers: its stdout, an error it fails with, or either decided per call.
Answer = bytes | Exception | Callable[[Call], "bytes | Exception"]


@dataclass
class FakeContainers:
    """A running stack's containers.

    `exec` answers with the first (marker, answer) of `by_marker` whose marker is in the
    call's text, else with the next of `answers` (in call order), else with nothing. `ps`
    shows `running` up and healthy; `run` (docker compose …) is recorded in `commands`.
    """

    answers: list[bytes] = field(default_factory=list)
    by_marker: list[tuple[str, Answer]] = field(default_factory=list)
    fail_on: str | None = None  # psql fails (exit 3) when the SQL contains this
    running: tuple[str, ...] = ()
    calls: list[Call] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    # `run` (docker compose …) raises these in turn for the command they name ("pause").
    run_failures: list[tuple[str, Exception]] = field(default_factory=list)

    def exec(
        self,
        service: str,
        argv: list[str],
        *,
        input: bytes | None = None,  # mirrors Compose.exec
        user: str | None = None,
        timeout: float = 60,
    ) -> bytes:
        call = Call(service, argv, _callers_stdin(service, argv, input), user)
        self.calls.append(call)
        if self.fail_on and self.fail_on in call.stdin:
            raise ExternalCommandFailed("docker compose exec (exit 3)", "ERROR: boom")
        for marker, answer in self.by_marker:
            if marker in call.text:
                result = answer(call) if callable(answer) else answer
                if isinstance(result, Exception):
                    raise result
                return result
        return self.answers.pop(0) if self.answers else b""

    def ps(self) -> list[ServiceState]:
        return [
            ServiceState(name, f"c-{name}", "running", "healthy", "Up", ()) for name in self.running
        ]

    def ps_with_checks(self) -> list[ServiceState]:
        return self.ps()

    def running_services(self) -> set[str]:
        return set(self.running)

    def run(self, args: list[str], **_: object) -> None:
        self.commands.append(args)
        for index, (command, failure) in enumerate(self.run_failures):
            if args[:1] == [command]:
                del self.run_failures[index]
                raise failure

    def sent(self, marker: str) -> list[Call]:
        return [call for call in self.calls if marker in call.text]

    def variables(self, call: int = -1) -> dict[str, str]:
        """The psql variables of one call, the last by default."""
        return self.calls[call].variables()


@dataclass
class FakeEngine:
    """The one stand-in for the Docker engine (mailstack.adapters.docker.Engine): images,
    containers, volumes and networks as the test sets them; every one-shot job, build, pull
    and removal recorded in order in `events`.

    A one-shot job answers with the first (marker, answer) of `jobs` whose marker is in its
    command line (OneShot.argv joined by spaces), else exit 0 with no output. An answer is
    stdout, a (returncode, stdout, stderr) triple, an exception, or a function of the job.
    """

    images: dict[str, str] = field(default_factory=dict)  # reference -> id
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # reference -> labels
    containers: dict[str, str] = field(default_factory=dict)  # container -> image id
    healths: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    volumes: set[str] = field(default_factory=set)
    networks: list[tuple[str, list[str]]] = field(default_factory=list)
    docker_root: str | None = "/var/lib/docker"
    version: str = "27.0.0"
    jobs: list[tuple[str, JobAnswer]] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)  # (what, detail)
    ran: list[OneShot] = field(default_factory=list)

    def image_id(self, reference: str) -> str | None:
        return self.images.get(reference)

    def has_image(self, reference: str) -> bool:
        return reference in self.images

    def image_labels(self, reference: str) -> dict[str, str]:
        return dict(self.labels.get(reference, {}))

    def container_image_id(self, container: str) -> str | None:
        return self.containers.get(container)

    def health(self, containers: Sequence[str]) -> dict[str, dict[str, Any] | None] | None:
        return {name: self.healths.get(name) for name in containers}

    def volume_exists(self, name: str) -> bool:
        return name in self.volumes

    def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        self.events.append(("create_volume", name))
        self.volumes.add(name)

    def remove_volume(self, name: str) -> None:
        self.events.append(("remove_volume", name))
        self.volumes.discard(name)

    def remove_container(self, name: str) -> None:
        self.events.append(("remove_container", name))

    def root_dir(self) -> str | None:
        return self.docker_root

    def server_version(self) -> str:
        return self.version

    def network_subnets(self, exclude_prefix: str) -> list[tuple[str, list[str]]]:
        return [(name, nets) for name, nets in self.networks if not name.startswith(exclude_prefix)]

    def run(
        self,
        job: OneShot,
        *,
        input: bytes | None = None,  # mirrors subprocess.run
        timeout: float,
        what: str,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        result = self._answer(job, what)
        if check and result.returncode != 0:
            raise ExternalCommandFailed(
                f"{what} (exit {result.returncode})", result.stderr.decode()
            )
        return result

    def stream(self, job: OneShot, on_line: Callable[[str], None], *, what: str) -> tuple[int, str]:
        result = self._answer(job, what)
        for line in result.stdout.decode().splitlines():
            on_line(line)
        return result.returncode, result.stderr.decode()

    def build(self, build: Build, *, timeout: float, what: str) -> None:
        self.events.append(("build", build.tag))
        self.images[build.tag] = f"sha256:{build.tag}"

    def import_rootfs(self, tar: bytes, reference: str) -> None:
        self.events.append(("import", reference))
        self.images[reference] = f"sha256:{reference}"

    def pull(self, reference: str) -> None:
        self.events.append(("pull", reference))
        self.images[reference] = f"sha256:{reference}"

    def jobs_matching(self, marker: str) -> list[OneShot]:
        return [job for job in self.ran if marker in " ".join(job.argv())]

    def _answer(self, job: OneShot, what: str) -> subprocess.CompletedProcess[bytes]:
        self.ran.append(job)
        self.events.append(("run", what))
        command = " ".join(job.argv())
        for marker, answer in self.jobs:
            if marker in command:
                result = answer(job) if callable(answer) else answer
                if isinstance(result, Exception):
                    raise result
                if isinstance(result, bytes):
                    return subprocess.CompletedProcess(job.argv(), 0, result, b"")
                code, out, err = result
                return subprocess.CompletedProcess(job.argv(), code, out, err)
        return subprocess.CompletedProcess(job.argv(), 0, b"", b"")


JobAnswer = (
    bytes
    | tuple[int, bytes, bytes]
    | Exception
    | Callable[[OneShot], "bytes | tuple[int, bytes, bytes] | Exception"]
)


def _is_an_engine(engine: FakeEngine) -> Engine:
    return engine  # mypy: the fake keeps the Protocol's signatures


@dataclass
class FakeProject(FakeContainers):
    """FakeContainers that also names each service's image (Compose.images), for code that
    records the stack's images, such as a backup's manifest."""

    service_images: dict[str, str] = field(default_factory=dict)

    def images(self) -> dict[str, str]:
        return dict(self.service_images)
