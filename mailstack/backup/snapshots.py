"""The snapshots in a repository: list them, find the one a command names, and prune them by
the retention policy of mailstack.yaml."""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass

from mailstack.backup.layout import TAG, WARM_TAG
from mailstack.backup.repository import job_lock, prepare, stack_repository
from mailstack.backup.restic import Repository
from mailstack.errors import UsageError
from mailstack.stack.stackdir import Stack

_SNAPSHOT_ID = re.compile(r"^(latest|[0-9a-f]{8,64})\Z")


@dataclass(frozen=True)
class Snapshot:
    """One snapshot as `backup list` shows it."""

    id: str
    short_id: str
    time: str
    hostname: str
    tags: tuple[str, ...]

    def __str__(self) -> str:
        tags = ", ".join(tag for tag in self.tags if tag != TAG)
        return f"{self.short_id}  {self.time[:19].replace('T', ' ')}  {self.hostname}" + (
            f"  [{tags}]" if tags else ""
        )


@dataclass(frozen=True)
class PruneResult:
    """What `backup prune` kept and removed."""

    kept: int
    removed: tuple[str, ...]
    policy: str

    def __str__(self) -> str:
        return (
            f"kept {self.kept} snapshot(s), removed {len(self.removed)} ({self.policy}); "
            "unused data pruned"
        )


def list_snapshots(stack: Stack) -> list[Snapshot]:
    """The stack's snapshots, oldest first."""
    return _snapshots(stack_repository(stack))


def _snapshots(repository: Repository, *, warm_passes: bool = False) -> list[Snapshot]:
    """The snapshots, oldest first; a warm pass (half of an unfinished backup) only if asked."""
    output = repository.run(
        ["snapshots", "--json", "--no-lock"], what="restic snapshots", timeout=600
    )
    found = [
        item
        for item in json.loads(output or b"[]") or []
        if warm_passes or WARM_TAG not in (item.get("tags") or ())
    ]
    return [
        Snapshot(
            id=str(item.get("id", "")),
            short_id=str(item.get("short_id", ""))[:8],
            time=str(item.get("time", "")),
            hostname=str(item.get("hostname", "")),
            tags=tuple(item.get("tags") or ()),
        )
        for item in found
    ]


def resolve_snapshot(repository: Repository, given: str | None) -> Snapshot:
    """The snapshot a command names: an id (or its start) or latest (the default)."""
    wanted = given or "latest"
    if not _SNAPSHOT_ID.match(wanted):
        raise UsageError(
            f"SNAPSHOT: {wanted[:80]!r} is not a snapshot id (hex, 8–64 characters, or latest)",
            hint="`mailstack backup list` shows them",
        )
    snapshots = _snapshots(repository)
    if wanted == "latest":
        found = snapshots[-1:]
    else:
        found = [item for item in snapshots if item.id.startswith(wanted)]
        if len(found) > 1:
            raise UsageError(
                f"SNAPSHOT: {wanted!r} matches {len(found)} snapshots; give more of it"
            )
    if not found:
        raise UsageError(
            f"SNAPSHOT: {wanted!r} is not a snapshot in {repository.target}",
            hint="`mailstack backup list` shows them",
        )
    return found[-1]


def prune(stack: Stack) -> PruneResult:
    """Forget snapshots beyond backup.keep_daily/weekly/monthly and free their space."""
    backup = stack.config.backup
    repository = stack_repository(stack)
    policy = (
        f"keep daily {backup.keep_daily}, weekly {backup.keep_weekly}, "
        f"monthly {backup.keep_monthly}"
    )
    keep = [
        "--keep-daily", str(backup.keep_daily), "--keep-weekly", str(backup.keep_weekly),
        "--keep-monthly", str(backup.keep_monthly),
    ]  # fmt: skip
    if not any((backup.keep_daily, backup.keep_weekly, backup.keep_monthly)):
        raise UsageError(
            "mailstack.yaml: backup: keep_daily, keep_weekly and keep_monthly are all 0",
            hint="prune would remove every snapshot; keep at least one",
        )
    with job_lock(stack.dir):
        prepare(repository, stack.dir.root)
        output = repository.run(
            ["forget", "--json", "--group-by", "host", *keep], what="restic forget"
        )
        kept = 0
        removed: list[str] = []
        for line in output.decode().splitlines():
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                for group in json.loads(line) or []:
                    kept += len(group.get("keep") or [])
                    removed += [str(s.get("short_id")) for s in group.get("remove") or []]
        repository.run(["prune"], what="restic prune", timeout=86400)
    return PruneResult(kept, tuple(removed), policy)
