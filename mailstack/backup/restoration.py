"""`backup restore`: a snapshot (or only its mail, database, config or some mailboxes) back
into the stack, a safety snapshot of the running state first, or into a directory (--to)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mailstack.accounts import mailstore
from mailstack.backup.creation import snapshot_running_stack
from mailstack.backup.dumps import restore_db_dump
from mailstack.backup.layout import (
    DB_DUMP,
    DUMP_PATH,
    INVENTORY,
    MANIFEST,
    SAFETY_TAG,
    SNAPSHOT_ROOT,
    STACK_PATH,
    TAG,
    VOLUMES_PATH,
    WEBMAIL_DUMP,
    WITH_MAIL,
    volumes_of,
)
from mailstack.backup.repository import Progress, job_lock, say, stack_repository
from mailstack.backup.restic import Mount, Repository
from mailstack.backup.snapshots import Snapshot, resolve_snapshot
from mailstack.errors import UsageError
from mailstack.runtime.lifecycle import wait_healthy
from mailstack.stack.config_values import normalize_address
from mailstack.stack.stackdir import Stack

ONLY_PARTS = ("mail", "db", "config")


@dataclass(frozen=True)
class RestoreResult:
    """What `backup restore` put back, where, and the safety snapshot taken before."""

    snapshot: str
    parts: tuple[str, ...]
    destination: str
    safety_snapshot: str | None
    seconds: float

    def __str__(self) -> str:
        line = f"restored {', '.join(self.parts)} from snapshot {self.snapshot} into "
        line += f"{self.destination} in {self.seconds:.1f}s"
        if self.safety_snapshot:
            line += f" (the state before is in safety snapshot {self.safety_snapshot})"
        return line


def parse_only(values: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """--only values as (parts, mailbox addresses); an address stands for its mail only."""
    parts: list[str] = []
    mailboxes: list[str] = []
    for value in values:
        if value in ONLY_PARTS:
            parts.append(value)
            continue
        try:
            mailboxes.append(normalize_address(value))
        except ValueError:
            raise UsageError(
                f"--only: {value[:80]!r} is not mail, db, config or a mailbox address"
            ) from None
    return tuple(dict.fromkeys(parts)), tuple(dict.fromkeys(mailboxes))


def restore(
    stack: Stack,
    snapshot: str,
    only: Sequence[str] = (),
    to: Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> RestoreResult:
    """A snapshot into the stack (running: only with force) or into the directory `to`."""
    started = time.monotonic()
    parts, mailboxes = parse_only(only)
    if not parts and not mailboxes:
        parts = ("mail", "db", "config")
    repository = stack_repository(stack)
    with job_lock(stack.dir):
        found = resolve_snapshot(repository, snapshot)
        if to is not None:
            return _restore_to_directory(repository, found, parts, mailboxes, to, started)
        running = stack.compose.running_services()
        if running and not force:
            raise UsageError(
                f"the stack is running ({', '.join(sorted(running))}): restoring would "
                "overwrite its live data",
                hint="pass --force (a safety snapshot of the current state is taken first), "
                "or --to DIR to restore into a directory",
            )
        safety: str | None = None
        if running:
            say(progress, 0.0, "taking a safety snapshot of the current state")
            safety = snapshot_running_stack(stack, repository, [TAG, SAFETY_TAG], None).snapshot
        _restore_in_place(stack, repository, found, parts, mailboxes, running, progress)
    shown = (*parts, *mailboxes) if parts != ("mail", "db", "config") else ("everything",)
    return RestoreResult(
        found.short_id, shown, str(stack.dir.root), safety, time.monotonic() - started
    )


def _includes(parts: Sequence[str], mailboxes: Sequence[str], full: bool) -> list[str]:
    """The snapshot paths restic restores for these parts and mailboxes."""
    includes: list[str] = []
    if "config" in parts:
        includes.append(STACK_PATH)
    if "mail" in parts:  # users' data: the mail and, when the stack has them, calendars
        includes += [f"{VOLUMES_PATH}/{name}" for name in WITH_MAIL]
    if full:
        includes += [f"{VOLUMES_PATH}/redis", f"{VOLUMES_PATH}/rspamd"]
    if "db" in parts:
        includes += [f"{DUMP_PATH}/{DB_DUMP}", f"{DUMP_PATH}/{WEBMAIL_DUMP}"]
    for address in mailboxes:
        includes.append(_mailbox_path(address))
    if includes:
        includes += [f"{DUMP_PATH}/{MANIFEST}", f"{DUMP_PATH}/{INVENTORY}"]
    return includes


def _mailbox_path(address: str) -> str:
    """Where a mailbox's home is in a snapshot (/backup/volumes/mail/<domain>/<local part>)."""
    home = mailstore.mailbox_mail_path(address).removeprefix(mailstore.MAIL_ROOT)
    return f"{VOLUMES_PATH}/mail{home}"


def _restore_to_directory(
    repository: Repository,
    found: Snapshot,
    parts: Sequence[str],
    mailboxes: Sequence[str],
    to: Path,
    started: float,
) -> RestoreResult:
    destination = to.resolve()
    destination.mkdir(mode=0o700, parents=True, exist_ok=True)
    full = set(parts) == set(ONLY_PARTS)
    includes = _includes(parts, mailboxes, full)
    args = ["restore", found.id, "--target", "/restore"]
    for include in includes:
        args += ["--include", include]
    repository.run(
        args,
        [Mount(str(destination), f"/restore{SNAPSHOT_ROOT}", False)],
        what="restic restore",
        timeout=86400,
    )
    shown = (*parts, *mailboxes) if not full else ("everything",)
    return RestoreResult(found.short_id, shown, str(destination), None, time.monotonic() - started)


def _restore_in_place(  # noqa: PLR0912  # one branch per part of a stack
    stack: Stack,
    repository: Repository,
    found: Snapshot,
    parts: Sequence[str],
    mailboxes: Sequence[str],
    running: set[str],
    progress: Progress | None,
) -> None:
    compose = stack.compose
    project = stack.config.project
    full = set(parts) == set(ONLY_PARTS)
    wants_mail = "mail" in parts or bool(mailboxes)
    volumes = [
        name
        for name in volumes_of(stack.config)
        if full or (name == "mail" and wants_mail) or (name in WITH_MAIL and "mail" in parts)
    ]
    services = {
        "mail": ["dovecot"], "redis": ["rspamd", "redis"], "rspamd": ["rspamd"], "dav": ["dav"],
    }  # fmt: skip
    stopped = sorted({s for name in volumes for s in services[name] if s in running})
    if stopped:
        say(progress, 0.3, f"stopping {', '.join(stopped)}")
        compose.run(["stop", *stopped], timeout=300)
    try:
        mounts: list[Mount] = []
        args = ["restore", found.id, "--target", "/restore"]
        for name in volumes:
            mounts.append(Mount(f"{project}_{name}", f"/restore{VOLUMES_PATH}/{name}", False))
        if "config" in parts:
            mounts.append(Mount(str(stack.dir.root), f"/restore{STACK_PATH}", False))
        for include in _includes(parts, mailboxes, full):
            if not include.startswith(DUMP_PATH):
                args += ["--include", include]
        if mounts:
            # The restore replaces what is there: files written since the snapshot go
            # (the safety snapshot holds them).
            clear = [m.target for m in mounts if m.target != f"/restore{STACK_PATH}"]
            if mailboxes and "mail" not in parts:
                clear = [f"/restore{_mailbox_path(address)}" for address in mailboxes]
            for path in clear:
                repository.run([], mounts, before=["--clear", path], what="clearing before restore")
            say(progress, 0.5, "restoring files")
            repository.run(args, mounts, what="restic restore", timeout=86400)
    finally:
        if stopped:
            compose.run(["start", *stopped], timeout=300)
    if "db" in parts:
        say(progress, 0.8, "restoring the database")
        if "db" not in compose.running_services():
            compose.run(["up", "--detach", "db"], timeout=300)
            wait_healthy(stack, ["db"], 300, None)
        restore_db_dump(repository, found.id, compose)
    if stopped:
        wait_healthy(stack, stopped, 300, None)
