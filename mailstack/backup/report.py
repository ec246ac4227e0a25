"""The backups host report (mailstack.runtime.reports, topic backups): the snapshots as
`backup list` shows them and the last `backup verify`, for the admin service's backups page,
which cannot run restic itself (no Docker socket, no repository password).

At most MAX_SNAPSHOTS of the newest snapshots travel (a repository kept for years holds
hundreds); the body says how many there are in all. A stack whose repository was never
made (a local target without a repository, or no password yet) is reported as such without
starting restic: the report runs every 15 minutes, and must not build the backup image or
make a repository behind the operator's back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mailstack.backup import snapshots, verification
from mailstack.backup.target import parse_target
from mailstack.stack.secrets import BACKUP_PASSWORD, SECRETS_DIR
from mailstack.stack.stackdir import Stack

MAX_SNAPSHOTS = 50
EVERY_SECONDS = 15 * 60


def repository_made(stack: Stack) -> bool:
    """Whether there can be a repository to list: a password, and for a local target its
    restic config file (a remote target is asked)."""
    if not (stack.dir.root / SECRETS_DIR / BACKUP_PASSWORD).is_file():
        return False
    target = parse_target(stack.config.backup.target)
    return target.kind != "local" or (Path(target.path) / "config").is_file()


def backups_report(stack: Stack) -> dict[str, Any]:
    """{target, repository, count, snapshots (the newest MAX_SNAPSHOTS, oldest first, as
    `backup list --json` has them), left_out, last_verify (or None)}."""
    made = repository_made(stack)
    found = snapshots.list_snapshots(stack) if made else []
    shown = found[-MAX_SNAPSHOTS:]
    last = verification.last_verify(stack.dir)
    return {
        "target": stack.config.backup.target,
        "repository": "present" if made else "not made yet",
        "count": len(found),
        "left_out": len(found) - len(shown),
        "snapshots": [
            {
                "id": snapshot.id,
                "short_id": snapshot.short_id,
                "time": snapshot.time,
                "hostname": snapshot.hostname,
                "tags": list(snapshot.tags),
            }
            for snapshot in shown
        ],
        "last_verify": None
        if last is None
        else {
            "time": last.time,
            "ok": last.ok,
            "snapshot": last.snapshot,
            "seconds": last.seconds,
            "checks": [
                {"name": check.name, "ok": check.ok, "detail": check.detail[:300]}
                for check in last.checks
            ],
            "error": last.error[:300],
        },
    }
