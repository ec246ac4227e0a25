"""The one stand-in for the Compose adapter (exec, ps, run) in unit tests: a running stack
whose containers answer as each test says, recording every call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from mailstack.adapters.compose import ServiceState
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
        """The psql variables (--set=name=value) of this call."""
        found = {}
        for argument in self.argv:
            if argument.startswith("--set="):
                name, _, value = argument.removeprefix("--set=").partition("=")
                found[name] = value
        return found


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

    def exec(
        self,
        service: str,
        argv: list[str],
        *,
        input: bytes | None = None,  # mirrors Compose.exec
        user: str | None = None,
        timeout: float = 60,
    ) -> bytes:
        call = Call(service, argv, (input or b"").decode(), user)
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

    def run(self, args: list[str], **_: object) -> None:
        self.commands.append(args)

    def sent(self, marker: str) -> list[Call]:
        return [call for call in self.calls if marker in call.text]

    def variables(self, call: int = -1) -> dict[str, str]:
        """The psql variables of one call, the last by default."""
        return self.calls[call].variables()
