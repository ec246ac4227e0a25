"""`backup verify`: restic's check of the repository with a sample of its data read back, then
a trial restore of a snapshot compared with the manifest its backup recorded.

Each verification of the stack's repository, passed, failed or refused, is recorded in
.mailstack/backup-verify.json (the last one only), so the admin service's backups page can
say when the backups were last proven to restore (read by `last_verify`).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mailstack.adapters.docker import DOCKER, Bind, OneShot
from mailstack.backup.layout import DB_DUMP, INVENTORY, MANIFEST, SNAPSHOT_ROOT
from mailstack.backup.repository import job_lock, stack_repository
from mailstack.backup.restic import Mount, Repository
from mailstack.backup.snapshots import resolve_snapshot
from mailstack.errors import MailstackError, UsageError
from mailstack.stack.stackdir import Stack, StackDir, atomic_write

VERIFY_RECORD = "backup-verify.json"  # in the stack's state directory (.mailstack/)


@dataclass(frozen=True)
class Check:
    """One finding of a verification."""

    name: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


@dataclass(frozen=True)
class VerifyResult:
    """The findings of `backup verify` on one snapshot."""

    snapshot: str
    checks: tuple[Check, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def __str__(self) -> str:
        lines = [str(check) for check in self.checks]
        verdict = "verified" if self.ok else "FAILED verification"
        lines.append(f"snapshot {self.snapshot} {verdict} in {self.seconds:.1f}s")
        return "\n".join(lines)


def verify(
    stack: Stack, snapshot: str | None = None, read_percent: int | None = None
) -> VerifyResult:
    """The stack's repository verified, with its snapshot (default: the newest); the outcome
    recorded (record_verify), a failure to run too."""
    repository = stack_repository(stack)
    with job_lock(stack.dir):
        try:
            result = verify_repository(
                repository, snapshot, read_percent or stack.config.backup.verify_read_percent
            )
        except MailstackError as failed:
            record_verify(stack.dir, None, failed.message.splitlines()[0] if failed.message else "")
            raise
    record_verify(stack.dir, result)
    return result


@dataclass(frozen=True)
class VerifyRecord:
    """The last `backup verify` of the stack's repository, as recorded."""

    time: str  # ISO 8601, UTC
    ok: bool
    snapshot: str  # empty when it failed before a snapshot was chosen
    seconds: float
    checks: tuple[Check, ...]
    error: str  # the one line of a verification that could not run; empty otherwise


def record_verify(
    stack_dir: StackDir,
    result: VerifyResult | None,
    error: str = "",
    now: datetime.datetime | None = None,
) -> None:
    """Write the outcome of a verification (result, or the error that stopped it)."""
    moment = (now or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC)
    record = {
        "schema": 1,
        "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ok": bool(result and result.ok),
        "snapshot": result.snapshot if result else "",
        "seconds": round(result.seconds, 1) if result else 0.0,
        "checks": [asdict(check) for check in result.checks] if result else [],
        "error": error,
    }
    stack_dir.state_dir.mkdir(mode=0o700, exist_ok=True)
    atomic_write(
        stack_dir.state_dir / VERIFY_RECORD, (json.dumps(record, indent=2) + "\n").encode(), 0o600
    )


def last_verify(stack_dir: StackDir) -> VerifyRecord | None:
    """The recorded last verification; None when none was recorded (or the file is not ours)."""
    try:
        data = json.loads((stack_dir.state_dir / VERIFY_RECORD).read_text(encoding="utf-8"))
        return VerifyRecord(
            time=str(data["time"]),
            ok=data["ok"] is True,
            snapshot=str(data["snapshot"]),
            seconds=float(data["seconds"]),
            checks=tuple(
                Check(str(item["name"]), item["ok"] is True, str(item["detail"]))
                for item in data["checks"]
            ),
            error=str(data["error"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def verify_repository(
    repository: Repository, snapshot: str | None, read_percent: int
) -> VerifyResult:
    """restic check with a data sample, then a trial restore compared with the manifest."""
    started = time.monotonic()
    if not 1 <= read_percent <= 100:
        raise UsageError(f"--read-data: {read_percent} is not a percentage (1–100)")
    found = resolve_snapshot(repository, snapshot)
    checks = [Check("snapshot", True, f"{found.short_id} from {found.time[:19]}")]
    repository.run(
        ["check", f"--read-data-subset={read_percent}%"], what="restic check", timeout=86400
    )
    checks.append(Check("repository", True, f"structure intact, {read_percent}% of data read back"))
    with tempfile.TemporaryDirectory(prefix="mailstack-verify-") as scratch:
        root = Path(scratch)
        root.chmod(0o700)
        repository.run(
            ["restore", found.id, "--target", "/restore", "--include", SNAPSHOT_ROOT],
            [Mount(str(root), f"/restore{SNAPSHOT_ROOT}", False)],
            what="restic restore (trial)",
            timeout=86400,
        )
        checks += compare_with_manifest(repository, root)
    return VerifyResult(found.short_id, tuple(checks), time.monotonic() - started)


def compare_with_manifest(repository: Repository, root: Path) -> list[Check]:
    """A trial restore (root = the snapshot's /backup) against what the backup recorded."""
    checks: list[Check] = []
    try:
        manifest = json.loads((root / "dump" / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        return [Check("manifest", False, f"dump/{MANIFEST} is missing or unreadable ({e})")]
    stack_files: dict[str, str] = manifest.get("stack_files", {})
    bad = [
        path
        for path, digest in stack_files.items()
        if not (root / "stack" / path).is_file()
        or hashlib.sha256((root / "stack" / path).read_bytes()).hexdigest() != digest
    ]
    checks.append(
        Check(
            "stack files",
            not bad,
            f"{len(stack_files) - len(bad)}/{len(stack_files)} identical"
            + (f"; differ: {', '.join(bad[:5])}" if bad else ""),
        )
    )
    dump = root / "dump" / DB_DUMP
    dump_ok = dump.is_file() and hashlib.sha256(dump.read_bytes()).hexdigest() == manifest.get(
        "db_dump_sha256"
    )
    rows = _dump_row_counts(repository, root) if dump_ok else {}
    expected_rows: dict[str, int] = manifest.get("db_rows", {})
    differing = [t for t, n in expected_rows.items() if rows.get(t, 0) != n]
    checks.append(
        Check(
            "database dump",
            dump_ok and not differing,
            "unreadable or changed" if not dump_ok else
            f"{sum(expected_rows.values())} rows in {len(expected_rows)} tables as recorded"
            if not differing else f"row counts differ in {', '.join(differing)}",
        )
    )  # fmt: skip
    recorded = _read_inventory(root / "dump" / INVENTORY)
    restored = inventory_of(root / "volumes" / "mail")
    mismatched = sorted(
        address for address in recorded.keys() | restored.keys()
        if recorded.get(address) != restored.get(address)
    )  # fmt: skip
    messages = sum(count for count, _ in restored.values())
    checks.append(
        Check(
            "mail",
            not mismatched and (root / "dump" / INVENTORY).is_file(),
            f"{messages} messages in {len(restored)} mailbox(es) as recorded"
            if not mismatched
            else f"counts differ for {', '.join(mismatched[:5])}",
        )
    )
    return checks


def _read_inventory(path: Path) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                found[parts[0]] = (int(parts[1]), int(parts[2]))
    return found


def inventory_of(mail_root: Path) -> dict[str, tuple[int, int]]:
    """{local@domain: (messages, bytes)} of maildirs laid out as /var/mail (like --inventory)."""
    found: dict[str, tuple[int, int]] = {}
    if not mail_root.is_dir():
        return found
    for domain in sorted(p for p in mail_root.iterdir() if p.is_dir()):
        for home in sorted(p for p in domain.iterdir() if p.is_dir()):
            count = size = 0
            for folder in (home / "Maildir").rglob("*"):
                if folder.is_dir() and folder.name in ("cur", "new"):
                    for message in folder.iterdir():
                        if message.is_file():
                            count += 1
                            size += message.stat().st_size
            if count:
                found[f"{home.name}@{domain.name}"] = (count, size)
    return found


def _dump_row_counts(repository: Repository, root: Path) -> dict[str, int]:
    """Rows per table in a custom-format dump, read back with pg_restore (the dump is valid)."""
    output = _pg_restore_data(repository, root)
    counts: dict[str, int] = {}
    table: str | None = None
    for line in output.splitlines():
        if table is None:
            match = re.match(r"^COPY ([^ ]+) ", line)
            if match:
                table = match.group(1).replace('"', "")
                counts[table] = 0
        elif line == "\\.":
            table = None
        else:
            counts[table] += 1
    return counts


def _pg_restore_data(repository: Repository, root: Path) -> str:
    """The dump's data as pg_restore prints it (COPY blocks), read in the backup image."""
    reader = OneShot(
        repository.image,
        ("--data-only", "--file=-", f"/dump/{DB_DUMP}"),
        entrypoint="pg_restore",
        binds=(Bind(str(root / "dump"), "/dump", read_only=True),),
        read_only=True,
    )
    result = DOCKER.run(reader, timeout=3600, what="pg_restore (reading the dump back)")
    return result.stdout.decode("utf-8", errors="replace")
