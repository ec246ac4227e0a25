"""A mailbox's Sieve scripts, as operators manage them (`mailstack mailbox sieve show|set`).

Scripts live in the mailbox's home in the dovecot container (~/sieve, the active one linked
as ~/.dovecot.sieve), where ManageSieve (port 4190) puts users' own scripts too. Everything
goes through `docker compose exec dovecot` with argument lists: the script text travels on
stdin, never in argv. A script is compiled with sievec (the image's `sieve-check`) before it
is stored; `doveadm sieve put` compiles it again and stores it only when that succeeds, so a
broken script never replaces the active one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from mailstack.adapters.psql import Executor
from mailstack.errors import ExternalCommandFailed, MailstackError, UsageError

MAIL_SERVICE = "dovecot"
CHECKER = "/usr/local/bin/sieve-check"
DEFAULT_NAME = "mailstack"
MAX_SCRIPT_BYTES = 1024 * 1024  # sieve_max_script_size in dovecot.conf
# ManageSieve allows more, but a name is also a file name in the mailbox's home.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")
# sievec: "script: line 4: error: unknown command 'foo' (only reported …)."
# doveadm:  "Error: sieve: mailstack: line 4: unknown command 'foo' (only reported …)"
_COMPILE_ERROR = re.compile(r"line (?P<line>\d+): (?:error: )?(?P<text>.+?)\.?$")
_OCCURRENCE_NOTE = " (only reported once at first occurrence)"
_UNKNOWN_USER = ("user doesn't exist", "unknown user")


@dataclass(frozen=True)
class ScriptInfo:
    name: str
    active: bool


@dataclass(frozen=True)
class SieveScripts:
    """A mailbox's scripts and the text of its active one (`sieve show`)."""

    address: str
    scripts: tuple[ScriptInfo, ...]
    active: str | None
    text: str | None

    def __str__(self) -> str:
        """The active script's text as stored, so `show > FILE` then `set ADDRESS FILE` works."""
        return self.text or ""

    def summary(self) -> str:
        others = [s.name for s in self.scripts if not s.active]
        stored = f"; also stored, inactive: {', '.join(others)}" if others else ""
        if self.active is None:
            return f"{self.address} has no active Sieve script{stored}"
        return f"{self.address}: active Sieve script {self.active!r}{stored}"


@dataclass(frozen=True)
class SieveChange:
    """What `sieve set` did."""

    address: str
    name: str
    size_bytes: int
    replaced_active: str | None  # the script that was active before, if another one

    def __str__(self) -> str:
        line = f"activated Sieve script {self.name!r} ({self.size_bytes} bytes) for {self.address}"
        if self.replaced_active:
            line += f"; {self.replaced_active!r} is kept, inactive"
        return line


@dataclass(frozen=True)
class CompileError:
    line: int | None
    text: str


class SieveScriptInvalid(UsageError):
    """The script does not compile; nothing was stored or activated."""


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(
            f"--name: {name[:80]!r} is not a script name (letters, digits, '.', '_', '+', '-'; "
            "1–64, starting with a letter or digit)"
        )
    return name


def script_text(raw: bytes, source: str) -> str:
    """The script as text: at most sieve_max_script_size, UTF-8 (RFC 5228), no NUL."""
    if not raw.strip():
        raise UsageError(f"FILE: {source} is empty (an empty script would file nothing)")
    if len(raw) > MAX_SCRIPT_BYTES:
        raise UsageError(
            f"FILE: {source} is too large ({len(raw)} bytes; at most {MAX_SCRIPT_BYTES})"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(
            f"FILE: {source} is not UTF-8 text (byte {e.start + 1}); Sieve scripts are UTF-8"
        ) from None
    if "\0" in text:
        raise UsageError(f"FILE: {source} contains a NUL byte; it is not a Sieve script")
    return text


def compile_errors(output: str) -> list[CompileError]:
    """The errors sievec or doveadm printed, each with its line number where one is given."""
    errors: list[CompileError] = []
    for raw_line in output.splitlines():
        line = raw_line.strip()
        match = _COMPILE_ERROR.search(line)
        if match:
            text = match.group("text").replace(_OCCURRENCE_NOTE, "").rstrip(".")
            errors.append(CompileError(int(match.group("line")), text))
    if not errors:
        # No line given (e.g. a script that is too large): the first line that says "error".
        for raw_line in output.splitlines():
            if "error" in raw_line.lower() and "validation failed" not in raw_line:
                errors.append(CompileError(None, raw_line.strip()))
                break
    return errors


def invalid_script(source: str, errors: list[CompileError]) -> SieveScriptInvalid:
    """One line naming the file, the line and sievec's complaint; the rest as a count."""
    if not errors:
        return SieveScriptInvalid(f"FILE: {source} does not compile; nothing was changed")
    first = errors[0]
    where = f"{source}:{first.line}" if first.line is not None else source
    more = len(errors) - 1
    return SieveScriptInvalid(
        f"FILE: {where}: {first.text}; nothing was changed",
        hint=f"{more} more error(s) after this one" if more else None,
    )


def check_script(compose: Executor, text: str, source: str) -> None:
    """Compile the script with sievec inside the dovecot container; raise on any error."""
    try:
        compose.exec(MAIL_SERVICE, [CHECKER], input=text.encode(), timeout=60)
    except ExternalCommandFailed as e:
        raise invalid_script(source, compile_errors(e.output)) from None


def show_scripts(compose: Executor, address: str) -> SieveScripts:
    scripts = list_scripts(compose, address)
    active = next((s.name for s in scripts if s.active), None)
    text = None
    if active is not None:
        rows = _doveadm_json(compose, ["sieve", "get", "-u", address, active], address)
        text = str(rows[0].get("sieve script", "")) if rows else ""
    return SieveScripts(address, tuple(scripts), active, text)


def list_scripts(compose: Executor, address: str) -> list[ScriptInfo]:
    rows = _doveadm_json(compose, ["sieve", "list", "-u", address], address)
    return [
        ScriptInfo(str(row.get("script", "")), str(row.get("active", "")).upper() == "ACTIVE")
        for row in rows
    ]


def set_script(compose: Executor, address: str, name: str, text: str, source: str) -> SieveChange:
    """Check, store and activate a script; a script that does not compile changes nothing."""
    check_name(name)
    before = list_scripts(compose, address)  # also proves the mailbox exists
    check_script(compose, text, source)
    try:
        _mail_exec(
            compose, ["doveadm", "sieve", "put", "-a", "-u", address, name], input=text.encode()
        )
    except ExternalCommandFailed as e:
        errors = compile_errors(e.output)
        if errors and errors[0].line is not None:
            raise invalid_script(source, errors) from None
        raise
    previous = next((s.name for s in before if s.active), None)
    replaced = previous if previous not in (None, name) else None
    return SieveChange(address, name, len(text.encode()), replaced)


def _doveadm_json(compose: Executor, argv: list[str], address: str) -> list[dict[str, Any]]:
    try:
        output = _mail_exec(compose, ["doveadm", "-f", "json", *argv])
    except ExternalCommandFailed as e:
        if any(marker in e.output.lower() for marker in _UNKNOWN_USER):
            raise UsageError(f"ADDRESS: {address} is not a mailbox of this stack") from None
        raise
    try:
        rows = json.loads(output.decode("utf-8") or "[]")
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MailstackError(f"unexpected answer from doveadm {argv[0]} {argv[1]}: {e}") from None
    if not isinstance(rows, list):
        raise MailstackError(f"unexpected answer from doveadm {argv[0]} {argv[1]}")
    return [row for row in rows if isinstance(row, dict)]


def _mail_exec(compose: Executor, argv: list[str], input: bytes = b"") -> bytes:
    # Empty stdin by default: `docker compose exec` would otherwise read the operator's terminal.
    return compose.exec(MAIL_SERVICE, argv, input=input, timeout=60)
