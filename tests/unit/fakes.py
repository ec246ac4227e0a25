"""Stand-ins for the Compose adapter shared by the unit tests of the SQL-speaking modules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from mailstack.errors import ExternalCommandFailed


class Call(NamedTuple):
    service: str
    argv: list[str]
    stdin: str
    user: str | None


@dataclass
class FakeDb:
    """Stands in for Compose.exec: records each psql call, answers with canned CSV."""

    answers: list[bytes] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    fail_on: str | None = None

    def exec(
        self,
        service: str,
        argv: list[str],
        *,
        input: bytes | None = None,  # mirrors Compose.exec
        user: str | None = None,
        timeout: float = 60,
    ) -> bytes:
        stdin = (input or b"").decode()
        self.calls.append(Call(service, argv, stdin, user))
        if self.fail_on and self.fail_on in stdin:
            raise ExternalCommandFailed("docker compose exec (exit 3)", "ERROR: boom")
        return self.answers.pop(0) if self.answers else b""

    def variables(self, call: int = -1) -> dict[str, str]:
        """The psql variables (--set=name=value) of one call, the last by default."""
        found = {}
        for argument in self.calls[call].argv:
            if argument.startswith("--set="):
                name, _, value = argument.removeprefix("--set=").partition("=")
                found[name] = value
        return found
