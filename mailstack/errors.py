"""The one error hierarchy: a message an operator understands, a hint, an exit code."""

from __future__ import annotations

from pathlib import Path

# Every exit code of every command (README: "Exit codes"). 0, 1 and 2 mean the same
# everywhere; each code above names one state of one command, never two.
EXIT_OK = 0
EXIT_FAILED = 1  # something failed (the red line says what)
EXIT_USAGE = 2  # bad input: an argument, or a value in a file (nothing was changed)
# `check tls`: nothing failed, but the chain ends at the stack's own CA (tls.mode selfsigned):
# fine offline, trusted by no other server.
EXIT_OWN_CA = 3
# `check updates`: Debian security fixes wait for an image (`update --security` takes them).
EXIT_SECURITY_PENDING = 4
# `dkim rotate`: the new key's record is not visible in DNS yet; signing switches once it is.
EXIT_DKIM_PENDING = 5
# `check health`: nothing failed, but an item warns (a queue growing, a backup a day late).
EXIT_HEALTH_WARN = 6


class MailstackError(Exception):
    """An error shown to the operator as one line (plus an optional hint)."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(MailstackError):
    """Bad input from the operator: a bad argument or a bad value in a file."""

    exit_code = EXIT_USAGE


class NotFound(UsageError):
    """Bad input naming something that does not exist (the REST API answers 404)."""


class AlreadyExists(UsageError):
    """Bad input naming something new that exists already (the REST API answers 409)."""


class InUse(UsageError):
    """Bad input asking to remove something still in use (the REST API answers 409)."""


class Forbidden(UsageError):
    """A request its principal may not make: a domain administrator naming another domain,
    a token without the scope (the REST API answers 403, the web admin says so)."""


class ConfigError(UsageError):
    """A bad value in mailstack.yaml, named by key path."""

    def __init__(self, source: str, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.problem = f"{_short(value)} {allowed}".strip()  # the value and what is allowed
        super().__init__(f"{source}: {key}: {self.problem}" if key else f"{source}: {self.problem}")

    def named(self, option: str) -> UsageError:
        """The same problem, naming the command-line option the value came from."""
        return UsageError(f"{option}: {self.problem}", hint=self.hint)


class StackNotInitialized(UsageError):
    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} is not a mailstack directory (no mailstack.yaml)",
            hint="run `mailstack init` or pass --dir",
        )


class StackExists(UsageError):
    def __init__(self, path: Path) -> None:
        super().__init__(
            f"{path} already holds a mailstack stack",
            hint="pass --force to re-initialise (the old mailstack.yaml is kept as a dated backup)",
        )


class UnresolvedConflicts(MailstackError):
    def __init__(self, paths: list[str]) -> None:
        listed = ", ".join(paths)
        super().__init__(
            f"unresolved render conflicts in: {listed}",
            hint="edit each file (the merge candidate is beside it as FILE.mailstack-merge), "
            "then run `mailstack resolve FILE`",
        )
        self.paths = paths


class ExternalCommandFailed(MailstackError):
    """An external program (docker, compose, a daemon's checker) failed."""

    def __init__(self, what: str, output: str, hint: str | None = None) -> None:
        tail = "\n".join(line for line in output.strip().splitlines()[-12:])
        message = f"{what} failed" + (f":\n{tail}" if tail else "")
        super().__init__(message, hint)
        self.output = output


class DockerUnavailable(MailstackError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            f"the Docker engine or Compose v2 is not usable: {detail}",
            hint="run scripts/setup-host.sh (installs Docker and Compose v2), then try again",
        )


def _short(value: object, limit: int = 80) -> str:
    """A printable, bounded rendering of a bad value for an error line."""
    if value is None:
        return ""
    text = repr(value) if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[:limit] + "…"
    return text
