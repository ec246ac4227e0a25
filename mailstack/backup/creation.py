"""`backup create`: one consistent snapshot of the running stack (its layout: backup.layout).

Consistency: a first "warm" pass uploads the data while everything runs; then Dovecot and
Redis are paused (cgroup freezer: `docker compose pause`) for a second pass that only re-reads
what changed, so the snapshot is one instant of the mail store. Postfix keeps accepting mail
meanwhile; deliveries wait in its queue for the pause to end. The warm snapshot is then
forgotten (its data is shared with the final one).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailstack import __version__, services, units
from mailstack.accounts import mailstore
from mailstack.adapters import psql
from mailstack.adapters.compose import Compose
from mailstack.adapters.docker import DOCKER
from mailstack.backup.dumps import dump_mail_database, dump_webmail
from mailstack.backup.layout import (
    DB_DUMP,
    DUMP_PATH,
    INVENTORY,
    MANIFEST,
    SNAPSHOT_ROOT,
    STACK_PATH,
    TAG,
    VOLUMES_PATH,
    WARM_TAG,
    WEBMAIL_DUMP,
    volumes_of,
)
from mailstack.backup.repository import Progress, job_lock, prepare, say, stack_repository
from mailstack.backup.restic import Mount, Repository
from mailstack.errors import ExternalCommandFailed, MailstackError, UsageError
from mailstack.stack.stackdir import STATE_DIR, Stack

# Paused for the final pass: Dovecot (the mail store) and Redis (its append-only file).
PAUSED_SERVICES = tuple(s.name for s in services.SERVICES if s.paused_for_backup)
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)")
# runc gives up freezing a container whose processes stay in uninterruptible sleep (disk
# I/O on a busy host) a moment too long; a later try usually freezes at once.
PAUSE_TRIES = 3
PAUSE_RETRY_SECONDS = 2.0
HYPERSCAN_CACHES = ("*.hs", "*.hs.unser", "*.hsmc", "*.hsmp")
MANIFEST_SCHEMA = 1
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


@dataclass(frozen=True)
class BackupResult:
    """What `backup create` stored, and how long mail was paused."""

    snapshot: str
    target: str
    files: int
    bytes_processed: int
    bytes_new: int
    bytes_stored: int
    seconds: float
    pause_seconds: float
    repository_created: bool
    password_created: bool

    def __str__(self) -> str:
        return (
            f"snapshot {self.snapshot} in {self.target}: {self.files} files, "
            f"{units.human_size(self.bytes_processed)} read, "
            f"{units.human_size(self.bytes_new)} new, "
            f"{units.human_size(self.bytes_stored)} stored in the repository; "
            f"{self.seconds:.1f}s (mail paused {self.pause_seconds:.2f}s)"
        )


def await_health_after_pause(compose: Compose, since: float, timeout: float = 30) -> None:
    """Wait until each paused service passed a health probe started after the pause ended
    (`since`, time.time()). A probe that ran while they were frozen can leave Docker saying
    "unhealthy" until the next one passes (moby #46203), and whatever comes next (`compose
    up` in an update: `depends_on: service_healthy`) must not take that for a failure.
    Returns at the deadline regardless: the services run; their next probe decides."""
    deadline = time.monotonic() + timeout
    containers = [s.container for s in compose.ps() if s.service in PAUSED_SERVICES]
    while containers and time.monotonic() < deadline:
        healths = DOCKER.health(containers)
        if healths is not None and all(probed_healthy_since(h, since) for h in healths.values()):
            return
        time.sleep(0.5)


def probed_healthy_since(health: dict[str, Any] | None, since: float) -> bool:
    if not health:  # no healthcheck: nothing to wait for
        return True
    log = health.get("Log") or []
    if health.get("Status") != "healthy" or not log:
        return False
    # Docker's RFC 3339 time with nanoseconds and an offset; whole seconds are enough here.
    match = _RFC3339.fullmatch(str(log[-1].get("Start", "")))
    if not match:
        return False
    offset = "+00:00" if match[2] == "Z" else match[2]
    moment = datetime.datetime.fromisoformat(match[1] + offset)
    return moment.timestamp() >= int(since)


def create(stack: Stack, tag: str | None = None, progress: Progress | None = None) -> BackupResult:
    """One consistent snapshot of the running stack, tagged (see the module docstring)."""
    tags = [TAG]
    if tag is not None:
        if not _TAG.match(tag):
            raise UsageError(
                f"--tag: {tag[:80]!r} is not a tag (letters, digits, . _ -; 1–64, "
                "starting with a letter or digit)"
            )
        tags.append(tag)
    repository = stack_repository(stack)
    with job_lock(stack.dir):
        return snapshot_running_stack(stack, repository, tags, progress)


def snapshot_running_stack(
    stack: Stack, repository: Repository, tags: list[str], progress: Progress | None
) -> BackupResult:
    """The snapshot of `create`, for a caller that holds the job lock (restore's safety one)."""
    started = time.monotonic()
    compose = stack.compose
    running = compose.running_services()
    missing = [service for service in ("db", "dovecot") if service not in running]
    if missing:
        raise MailstackError(
            f"the stack is not running ({', '.join(missing)} stopped): a backup needs the "
            "database (for its dump) and Dovecot (for its counts)",
            hint="mailstack up, then back up again",
        )
    # A pause left by a job that was killed outright: nothing else pauses these services.
    compose.run(["unpause", *PAUSED_SERVICES], check=False, timeout=120)
    repository.kill()
    repository_created, password_created = prepare(repository, stack.dir.root)
    say(progress, 0.0, "dumping the database")
    with tempfile.TemporaryDirectory(prefix="mailstack-backup-") as scratch:
        staging = Path(scratch)
        staging.chmod(0o700)
        manifest = build_manifest(stack)
        dump = dump_mail_database(compose)
        (staging / DB_DUMP).write_bytes(dump)
        manifest["db_dump_sha256"] = hashlib.sha256(dump).hexdigest()
        webmail = dump_webmail(compose)
        if webmail is not None:
            (staging / WEBMAIL_DUMP).write_bytes(webmail)
            manifest["webmail_dump_sha256"] = hashlib.sha256(webmail).hexdigest()
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        mounts = _snapshot_mounts(stack, staging)
        base = backup_args(stack.config.hostname)
        tag_args = [option for name in tags for option in ("--tag", name)]
        warm = _Summary()
        say(progress, 0.0, "reading the mail store (warm pass)")
        final = _Summary()
        try:
            repository.stream([*base, "--tag", WARM_TAG], mounts, warm.reader(progress, 0.0, 0.9))
            say(progress, 0.9, "pausing Dovecot and Redis for the consistent pass")
            pause_started = time.monotonic()
            pause_for_backup(compose)
            try:
                repository.stream(
                    [*base, *tag_args],
                    mounts,
                    final.reader(progress, 0.9, 0.99),
                    before=["--inventory", f"{VOLUMES_PATH}/mail", f"{DUMP_PATH}/{INVENTORY}"],
                )
            finally:
                compose.run(["unpause", *PAUSED_SERVICES], timeout=120)
                pause_seconds = time.monotonic() - pause_started
                await_health_after_pause(compose, since=time.time())
        except BaseException:
            # The warm pass is never a snapshot of its own, also when the job fails; a job
            # killed a moment ago (Ctrl-C) left its lock behind.
            _forget_warm_passes(repository, unlock=True)
            raise
        _forget_warm_passes(repository, unlock=False)
    stored = repository_size(repository)
    say(progress, 1.0, "done")
    return BackupResult(
        snapshot=final.snapshot,
        target=str(repository.target),
        files=final.files,
        bytes_processed=final.bytes_processed,
        bytes_new=warm.bytes_new + final.bytes_new,
        bytes_stored=stored,
        seconds=time.monotonic() - started,
        pause_seconds=pause_seconds,
        repository_created=repository_created,
        password_created=password_created,
    )


def backup_args(host: str) -> list[str]:
    """`restic backup` of the snapshot tree, as one host, with JSON progress."""
    args = ["backup", SNAPSHOT_ROOT, "--host", host, "--json"]
    # Stored mail is mail_crypt ciphertext and the dump is compressed already: compressing
    # again costs CPU (half the speed here) and saves nothing.
    args += ["--compression", "off"]
    # rspamd's compiled Hyperscan databases: caches, tens of MB, rebuilt at start, and tied
    # to the CPU they were compiled on (a new host may differ).
    for pattern in HYPERSCAN_CACHES:
        args += ["--exclude", f"{VOLUMES_PATH}/rspamd/{pattern}"]
    return args


@dataclass
class _Summary:
    """What restic's --json lines say about one backup run."""

    snapshot: str = ""
    files: int = 0
    bytes_processed: int = 0
    bytes_new: int = 0

    def reader(self, progress: Progress | None, low: float, high: float) -> Callable[[str], None]:
        def read(line: str) -> None:
            try:
                message = json.loads(line)
            except ValueError:
                return
            if not isinstance(message, dict):
                return
            if message.get("message_type") == "status" and progress:
                done = float(message.get("percent_done") or 0.0)
                total = int(message.get("total_bytes") or 0)
                progress(
                    low + (high - low) * done,
                    f"{units.human_size(int(message.get('bytes_done') or 0))} of "
                    f"{units.human_size(total)}",
                )
            elif message.get("message_type") == "summary":
                self.snapshot = str(message.get("snapshot_id", ""))
                self.files = int(message.get("total_files_processed") or 0)
                self.bytes_processed = int(message.get("total_bytes_processed") or 0)
                self.bytes_new = int(message.get("data_added") or 0)

        return read


def _forget_warm_passes(repository: Repository, *, unlock: bool) -> None:
    """Forget warm-pass snapshots (their data stays where a final snapshot shares it).

    One restic job: of the snapshots tagged as a warm pass, keep those that are also a
    mailstack snapshot (none are), so every warm pass goes, this run's and any a killed run
    left. unlock: first remove a killed job's lock (no job of this stack runs: host lock).
    """
    with contextlib.suppress(MailstackError):
        if unlock:
            repository.run(["unlock", "--remove-all"], what="restic unlock")
        repository.run(
            ["forget", "--tag", WARM_TAG, "--keep-tag", TAG], what="restic forget (warm pass)"
        )


def _snapshot_mounts(stack: Stack, staging: Path) -> list[Mount]:
    project = stack.config.project
    mounts = [Mount(str(stack.dir.root), STACK_PATH), Mount(str(staging), DUMP_PATH, False)]
    mounts += [
        Mount(f"{project}_{name}", f"{VOLUMES_PATH}/{name}") for name in volumes_of(stack.config)
    ]
    return mounts


def repository_size(repository: Repository) -> int:
    """The bytes the repository stores (restic stats, raw data)."""
    output = repository.run(["stats", "--mode", "raw-data", "--json"], what="restic stats")
    try:
        return int(json.loads(output).get("total_size", 0))
    except (ValueError, AttributeError):
        return 0


def build_manifest(stack: Stack) -> dict[str, Any]:
    """What a restore is checked against: versions, images, counts, digests of the stack files."""
    compose = stack.compose
    references = compose.images()
    image_ids: dict[str, str] = {}
    for service, reference in sorted(references.items()):
        image_ids[service] = f"{reference} {DOCKER.image_id(reference) or ''}".strip()
    usage = mailstore.mailbox_usage(compose)
    return {
        "schema": MANIFEST_SCHEMA,
        "mailstack_version": __version__,
        "project": stack.config.project,
        "hostname": stack.config.hostname,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "images": image_ids,
        "mailboxes": {
            address: {"messages": item.messages, "bytes": item.storage_bytes}
            for address, item in sorted(usage.items())
        },
        "db_rows": db_row_counts(compose),
        "stack_files": stack_file_digests(stack.dir.root),
    }


def pause_for_backup(compose: Compose) -> None:
    """Freeze the services a consistent pass reads (`docker compose pause`), trying again
    when runc could not freeze one in time; whatever that try froze is thawed first."""
    for attempt in range(1, PAUSE_TRIES + 1):
        try:
            compose.run(["pause", *PAUSED_SERVICES], timeout=120)
            return
        except ExternalCommandFailed as failure:
            if "unable to freeze" not in failure.output or attempt == PAUSE_TRIES:
                raise
            compose.run(["unpause", *PAUSED_SERVICES], timeout=120, check=False)
            time.sleep(PAUSE_RETRY_SECONDS)


_ROW_COUNTS = """
SELECT format('SELECT %L, count(*) FROM %I.%I;', schemaname || '.' || tablename,
              schemaname, tablename)
FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1 \\gexec
"""


def db_row_counts(compose: Compose) -> dict[str, int]:
    """{schema.table: rows} of the mail database (constant SQL; names quoted by format %I)."""
    output = compose.exec(
        psql.DB_SERVICE,
        psql.psql_argv({}),
        input=_ROW_COUNTS.encode(),
        user="postgres",
        timeout=300,
    )
    return {row[0]: int(row[1]) for row in psql.parse_rows(output) if len(row) == 2}


def stack_file_digests(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every regular file in the stack directory."""
    digests: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink() or not path.is_file() or relative == f"{STATE_DIR}/backup.lock":
            continue
        digests[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests
