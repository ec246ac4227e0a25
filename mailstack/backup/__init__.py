"""Backups: restic snapshots of everything a stack needs to be rebuilt, proven to restore.

restic runs in the `backup` image (Debian's restic, one `docker run --rm` per job), so the
host needs nothing but Docker, the version matches the stack's images, and the named volumes
are read through Docker wherever its data root is. A snapshot holds, under /backup:

    stack/              the stack directory: mailstack.yaml, secrets/ (mail_crypt keys too),
                        tls/, dkim/, overrides/, the rendered tree and .mailstack/
    volumes/mail        Dovecot's /var/mail (maildirs, indexes, sieve)
    volumes/redis       rspamd's learned data (Bayes, history, reputation)
    volumes/rspamd      rspamd's own state
    dump/db.pgdump      pg_dump -Fc of the mail directory (one transaction: consistent)
    dump/webmail.pgdump pg_dump -Fc of Roundcube's database, when webmail is on
    dump/manifest.json  versions, images, per-mailbox counts, DB row counts, file digests
    dump/mail-inventory.tsv  messages and bytes per mailbox, taken inside the pause

Consistency: a first "warm" pass uploads the data while everything runs; then Dovecot and
Redis are paused (cgroup freezer: `docker compose pause`) for a second pass that only re-reads
what changed, so the snapshot is one instant of the mail store. Postfix keeps accepting mail
meanwhile; deliveries wait in its queue for the pause to end. The warm snapshot is then
forgotten (its data is shared with the final one).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mailstack import __version__, services
from mailstack.accounts import mailstore
from mailstack.adapters import psql
from mailstack.adapters.compose import Compose
from mailstack.adapters.docker import DOCKER, Bind, OneShot
from mailstack.errors import ExternalCommandFailed, MailstackError, UsageError
from mailstack.images import builder, repository_key
from mailstack.runtime.lifecycle import wait_healthy
from mailstack.stack import Stack
from mailstack.stack.config_sections import Backup as BackupConfig
from mailstack.stack.config_values import check_backup_target, check_ssh_host_key, normalize_address
from mailstack.stack.secrets import BACKUP_PASSWORD, SECRETS_DIR, ensure_backup_password
from mailstack.stack.stackdir import STATE_DIR, StackDir

SNAPSHOT_ROOT = "/backup"
STACK_PATH = f"{SNAPSHOT_ROOT}/stack"
BACKUP_IMAGE = "backup"  # compose/backup: restic, run for one job at a time
VOLUMES_PATH = f"{SNAPSHOT_ROOT}/volumes"
DUMP_PATH = f"{SNAPSHOT_ROOT}/dump"
# Named volumes in a snapshot; the db volume is not: its content travels as the dump.
VOLUMES = ("mail", "redis", "rspamd")
# Paused for the final pass: Dovecot (the mail store) and Redis (its append-only file).
PAUSED_SERVICES = tuple(s.name for s in services.SERVICES if s.paused_for_backup)
_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?(Z|[+-]\d\d:\d\d)")
HYPERSCAN_CACHES = ("*.hs", "*.hs.unser", "*.hsmc", "*.hsmp")
DB_DUMP = "db.pgdump"
# Roundcube's own database (contacts, identities, settings), when the stack has one.
WEBMAIL_DUMP = "webmail.pgdump"
WEBMAIL_DATABASE = "roundcube"
MANIFEST = "manifest.json"
INVENTORY = "mail-inventory.tsv"
MANIFEST_SCHEMA = 1
TAG = "mailstack"
WARM_TAG = "warm-pass"
SAFETY_TAG = "safety"
S3_SECRET = "backup_s3_secret_access_key"  # noqa: S105  # a file name, not a secret
SSH_KEY = "backup_ssh_key"
# Capabilities of the backup container: read every file (backup), and write them back with
# their owners and modes (restore). Nothing else; no new privileges.
CAPABILITIES = ("DAC_READ_SEARCH", "DAC_OVERRIDE", "CHOWN", "FOWNER")
ONLY_PARTS = ("mail", "db", "config")
_SNAPSHOT_ID = re.compile(r"^(latest|[0-9a-f]{8,64})$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

Progress = Callable[[float, str], None]


# --- targets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where the repository is, as given (`location`) and as restic names it (`repository`)."""

    kind: Literal["local", "sftp", "s3"]
    location: str
    repository: str
    host: str = ""
    port: int = 0
    user: str = ""
    path: str = ""

    def __str__(self) -> str:
        return self.location


def parse_target(location: str) -> Target:
    """The target of mailstack.yaml (or `restore --from`) as a restic repository."""
    try:
        check_backup_target(location)
    except ValueError as e:
        raise UsageError(f"target: {location[:120]!r} {e}") from None
    if location.startswith("/"):
        return Target("local", location, "/repo", path=location)
    scheme, rest = location.split("://", 1)
    authority, _, path = rest.partition("/")
    path = "/" + path
    user, _, hostport = authority.rpartition("@")
    host, port = hostport, 0
    if hostport.startswith("["):
        host, _, after = hostport[1:].partition("]")
        port = int(after[1:]) if after.startswith(":") else 0
    elif ":" in hostport:
        host, _, number = hostport.partition(":")
        port = int(number)
    if scheme == "sftp":
        return Target("sftp", location, f"sftp:{user}@{host}:{path}", host, port or 22, user, path)
    protocol = "http" if scheme == "s3+http" else "https"
    endpoint = f"{host}:{port}" if port else host
    if ":" in host:
        endpoint = f"[{host}]:{port}" if port else f"[{host}]"
    return Target("s3", location, f"s3:{protocol}://{endpoint}{path}", host, port, path=path)


# --- the restic runner -----------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    source: str  # a host path or a volume name
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class Repository:
    """One restic repository, reached through the backup image with `docker run --rm`."""

    image: str
    target: Target
    password_file: Path
    name: str  # the container's name while a job runs (one job per stack at a time)
    cache_volume: str | None  # None: no cache (a one-off job such as a recovery)
    ssh_key: Path | None = None
    ssh_host_key: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_file: Path | None = None

    def job(
        self,
        mounts: Sequence[Mount] = (),
        command: Sequence[str] = (),
        *,
        entrypoint: str | None = None,
        name: str = "",
    ) -> OneShot:
        """The backup image with the repository, the password and mounts (its entrypoint,
        restic's wrapper, unless another program is named)."""
        binds = [Bind(str(self.password_file), "/run/secrets/backup_password", read_only=True)]
        env = [
            ("RESTIC_PASSWORD_FILE", "/run/secrets/backup_password"),
            ("RESTIC_REPOSITORY", self.target.repository),
        ]
        if self.cache_volume:
            binds.append(Bind(self.cache_volume, "/cache"))
        if self.target.kind == "local":
            binds.append(Bind(self.target.path, "/repo"))
        if self.target.kind == "s3":
            env.append(("AWS_ACCESS_KEY_ID", self.s3_access_key_id or ""))
            if self.s3_secret_file is not None:
                binds.append(Bind(str(self.s3_secret_file), f"/run/secrets/{S3_SECRET}", True))
        binds += [Bind(mount.source, mount.target, mount.read_only) for mount in mounts]
        return OneShot(
            self.image,
            tuple(command),
            entrypoint=entrypoint,
            name=name or self.name,
            hostname="mailstack-backup",
            # A local repository needs no network at all; remote ones reach what the host
            # reaches.
            network="none" if self.target.kind == "local" else "host",
            binds=tuple(binds),
            env=tuple(env),
            # Not read-only: restic sets the times of the parent directories it restores
            # into (/restore/backup/...), which Docker makes in the container's own layer.
            tmpfs=("/tmp:mode=1777",),  # noqa: S108  # the container's own tmpfs
            cap_add=CAPABILITIES,
            # What restic prints (decrypted dumps, progress) goes to mailstack only (log off).
        )

    def restic_args(self, args: Sequence[str], before: Sequence[str] = ()) -> list[str]:
        """The container's command: entrypoint options (before), then restic's arguments."""
        extra: list[str] = []
        if self.target.kind == "sftp":
            extra = ["-o", f"sftp.command={' '.join(self.ssh_argv())}"]
        if not self.cache_volume:
            extra.append("--no-cache")
        return [*before, *extra, *args] if args else list(before)

    def ssh_argv(self) -> list[str]:
        """ssh to the sftp target, trusting only the host key from mailstack.yaml."""
        return [
            "ssh", "-i", "/run/secrets/backup_ssh_key", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "UserKnownHostsFile=/run/secrets/backup_known_hosts",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=15",
            "-o", "ServerAliveInterval=30",
            "-p", str(self.target.port), f"{self.target.user}@{self.target.host}", "-s", "sftp",
        ]  # fmt: skip

    def _ssh_diagnosis(self, ssh_mounts: Sequence[Mount]) -> str:
        """ssh's own complaint about the sftp target, asked for directly.

        restic kills ssh as soon as the sftp session fails, often before ssh has printed why
        (host key mismatch, key not authorized); a second, bare connection always says it.
        """
        ssh, *arguments = self.ssh_argv()
        job = self.job(ssh_mounts, arguments, entrypoint=ssh, name=f"{self.name}-ssh")
        result = DOCKER.run(job, timeout=60, what="ssh", check=False)
        return (result.stderr or b"").decode(errors="replace")

    def _failure(self, what: str, code: int, output: str, ssh_mounts: Sequence[Mount]) -> Exception:
        if self.target.kind == "sftp" and "sftp" in output.lower():
            output += "\n" + self._ssh_diagnosis(ssh_mounts)
        return explain_failure(what, code, output, self.target)

    def _check_sources(self, mounts: Sequence[Mount]) -> None:
        """Docker would make a missing host path an empty directory: refuse instead."""
        if not self.password_file.is_file():
            raise UsageError(
                f"the backup repository password is missing ({self.password_file})",
                hint="`mailstack backup create` makes one for a new repository; for an existing "
                "one, put the stored password there (one line, mode 0600)",
            )
        for mount in mounts:
            if mount.source.startswith("/") and not Path(mount.source).exists():
                raise MailstackError(f"{mount.source} does not exist (needed at {mount.target})")

    @contextlib.contextmanager
    def _sftp_files(self) -> Iterator[list[Mount]]:
        """The known_hosts file for an sftp target (the host key from mailstack.yaml)."""
        if self.target.kind != "sftp":
            yield []
            return
        if self.ssh_key is None or not self.ssh_key.is_file():
            raise UsageError(
                f"the SSH key for the sftp target is missing ({self.ssh_key})",
                hint="run `mailstack backup init` to make it, then authorize its public key",
            )
        if not self.ssh_host_key:
            raise UsageError("backup.ssh_host_key: is required for an sftp target")
        host, port = self.target.host, self.target.port
        name = host if port == 22 else f"[{host}]:{port}"
        with tempfile.TemporaryDirectory(prefix="mailstack-ssh-") as scratch:
            known = Path(scratch) / "known_hosts"
            known.write_text(f"{name} {self.ssh_host_key}\n")
            yield [
                Mount(str(self.ssh_key), "/run/secrets/backup_ssh_key"),
                Mount(str(known), "/run/secrets/backup_known_hosts"),
            ]

    def run(
        self,
        args: Sequence[str],
        mounts: Sequence[Mount] = (),
        *,
        before: Sequence[str] = (),
        timeout: float = 3600,
        what: str = "restic",
    ) -> bytes:
        """Run one restic job; a failure becomes one clear error (see explain_failure)."""
        self._check_sources(mounts)
        with self._sftp_files() as ssh_mounts:
            job = self.job([*mounts, *ssh_mounts], self.restic_args(args, before))
            try:
                result = DOCKER.run(job, timeout=timeout, what=what, check=False)
            except KeyboardInterrupt:
                self.kill()
                raise
            if result.returncode != 0:
                output = (result.stderr or b"").decode(errors="replace")
                raise self._failure(what, result.returncode, output, ssh_mounts)
            return result.stdout

    def stream(
        self,
        args: Sequence[str],
        mounts: Sequence[Mount],
        on_line: Callable[[str], None],
        *,
        before: Sequence[str] = (),
        what: str = "restic backup",
    ) -> None:
        self._check_sources(mounts)
        with self._sftp_files() as ssh_mounts:
            job = self.job([*mounts, *ssh_mounts], self.restic_args(args, before))
            try:
                code, stderr = DOCKER.stream(job, on_line, what=what)
            except KeyboardInterrupt:
                self.kill()
                raise
            if code != 0:
                raise self._failure(what, code, stderr, ssh_mounts)

    def kill(self) -> None:
        """Stop this stack's backup container if one is left running (an interrupted job)."""
        DOCKER.remove_container(self.name)

    def initialized(self) -> bool:
        try:
            self.run(["cat", "config"], what="restic cat config", timeout=300)
        except RepositoryMissing:
            return False
        return True


class RepositoryMissing(MailstackError):
    pass


def explain_failure(  # noqa: PLR0911  # one return per cause an operator can act on
    what: str, code: int, output: str, target: Target
) -> MailstackError:
    """restic's failure as one operator-sized line naming the cause and the next step."""
    lines = [line for line in output.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else f"exit {code}"
    text = output.lower()
    if "wrong password" in text:
        return MailstackError(
            f"{what}: wrong password for the backup repository at {target}",
            hint=f"use the password made with the repository (secrets/{BACKUP_PASSWORD} of "
            "the stack that made it, or the copy you stored elsewhere)",
        )
    if "is there a repository at the following location" in text or (
        "unable to open config file" in text
    ):
        return RepositoryMissing(
            f"{what}: no backup repository at {target}",
            hint="`mailstack backup create` makes one; for a restore, check the target",
        )
    if "no space left on device" in text or "disk quota exceeded" in text:
        return MailstackError(
            f"{what}: the backup target {target} is full (no space left on device)",
            hint="free space there or choose a larger target; earlier snapshots are intact",
        )
    unreachable = (
        "connection refused", "no route to host", "could not resolve", "connection timed out",
        "network is unreachable", "unable to start the sftp session", "ssh command exited",
        "permission denied (publickey", "host key verification failed", "dial tcp",
        "no such host", "connection reset",
    )  # fmt: skip
    if any(marker in text for marker in unreachable):
        hint = "check the address, the port, the network and the credentials"
        if "host key verification failed" in text:
            hint = "backup.ssh_host_key does not match the server's host key"
        elif "permission denied" in text:
            hint = "authorize the public key from `mailstack backup init` on the server"
        return MailstackError(f"{what}: the backup target {target} is unreachable: {last}", hint)
    if "repository contains errors" in text or "pack id does not match" in text:
        damaged = [line for line in lines if "pack" in line.lower() and "error" in line.lower()]
        detail = (damaged or [last])[0]
        return MailstackError(
            f"{what}: the repository at {target} is damaged: {detail}",
            hint="run `mailstack backup create` to store the data again (fresh packs); "
            "snapshots that need the damaged pack cannot be fully restored",
        )
    if code in (130, 137, 143) and "fatal" not in text:
        return MailstackError(
            f"{what}: the job was interrupted (exit {code}); earlier snapshots are intact",
            hint="run it again: the next run removes what was left and backs up as usual",
        )
    if "repository is already locked" in text:
        return MailstackError(
            f"{what}: the repository at {target} is locked by another job: {last}",
            hint="wait for it to finish; a lock left by a crashed job is removed by the next run",
        )
    return ExternalCommandFailed(f"{what} (exit {code})", output)


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
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
class BackupResult:
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
            f"{mailstore.human_size(self.bytes_processed)} read, "
            f"{mailstore.human_size(self.bytes_new)} new, "
            f"{mailstore.human_size(self.bytes_stored)} stored in the repository; "
            f"{self.seconds:.1f}s (mail paused {self.pause_seconds:.2f}s)"
        )


@dataclass(frozen=True)
class RestoreResult:
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


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.detail}"


@dataclass(frozen=True)
class VerifyResult:
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


@dataclass(frozen=True)
class PruneResult:
    kept: int
    removed: tuple[str, ...]
    policy: str

    def __str__(self) -> str:
        return (
            f"kept {self.kept} snapshot(s), removed {len(self.removed)} ({self.policy}); "
            "unused data pruned"
        )


@dataclass(frozen=True)
class InitRepositoryResult:
    target: str
    created: bool
    password_created: bool
    ssh_public_key: str | None

    def __str__(self) -> str:
        line = f"repository {'created' if self.created else 'already present'} at {self.target}"
        if self.ssh_public_key:
            line += (
                "\nauthorize this key for the sftp user (its ~/.ssh/authorized_keys):\n"
                + self.ssh_public_key
            )
        return line


@dataclass(frozen=True)
class DisasterRecoveryResult:
    directory: Path
    snapshot: str
    project: str
    mailboxes: int
    seconds: float
    made_by_version: str

    def __str__(self) -> str:
        line = (
            f"rebuilt stack {self.project} in {self.directory} from snapshot {self.snapshot} "
            f"({self.mailboxes} mailbox(es)) in {self.seconds:.1f}s\n"
        )
        if self.made_by_version != __version__:
            line += (
                f"note: the snapshot was made by mailstack {self.made_by_version}, this is "
                f"{__version__}: run `mailstack render --dir {self.directory}` first (your "
                "edits are merged)\n"
            )
        return line + f"next: mailstack up --dir {self.directory}"


# --- the stack's repository ------------------------------------------------------------------


def ensure_image(stack_root: Path, registry: str | None, apt_sources: Path | None) -> str:
    """The backup image the stack records: built (or pulled) when missing."""
    return builder.ensure_images(
        stack_root, [BACKUP_IMAGE], registry=registry, apt_sources=apt_sources
    )[BACKUP_IMAGE]


def repository_for(
    stack_root: Path,
    config: BackupConfig,
    project: str,
    registry: str | None,
    apt_sources: Path | None = None,
) -> Repository:
    target = parse_target(config.target)
    if target.kind == "local":
        inside = Path(target.path).resolve()
        if inside == stack_root or stack_root in inside.parents:
            raise UsageError(
                f"mailstack.yaml: backup.target: {config.target!r} is inside the stack directory",
                hint="a backup must survive the loss of the stack: choose a path elsewhere "
                "(another disk, a mount) or a remote target",
            )
    secrets = stack_root / SECRETS_DIR
    return Repository(
        image=ensure_image(stack_root, registry, apt_sources),
        target=target,
        password_file=secrets / BACKUP_PASSWORD,
        name=f"{project}-backup-job",
        cache_volume=f"{project}-backup-cache",
        ssh_key=secrets / SSH_KEY if target.kind == "sftp" else None,
        ssh_host_key=config.ssh_host_key,
        s3_access_key_id=config.s3_access_key_id,
        s3_secret_file=secrets / S3_SECRET if target.kind == "s3" else None,
    )


def _repository(stack: Stack) -> Repository:
    config = stack.config
    return repository_for(
        stack.dir.root,
        config.backup,
        config.project,
        config.images.registry,
        config.images.apt_sources_path,
    )


@contextlib.contextmanager
def _job_lock(stack_dir: StackDir) -> Iterator[None]:
    """One backup job per stack at a time (a second one is refused, never queued)."""
    stack_dir.state_dir.mkdir(mode=0o700, exist_ok=True)
    path = stack_dir.state_dir / "backup.lock"
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MailstackError(
                "another backup job of this stack is running",
                hint="wait for it to finish (see `ps` for mailstack backup)",
            ) from None
        yield


def _prepare(repository: Repository, stack_root: Path) -> tuple[bool, bool]:
    """Password, SSH key, the local target's directory, a repository; (made repo, made pw)."""
    password_created = ensure_backup_password(stack_root)
    if repository.target.kind == "sftp":
        ensure_ssh_key(stack_root)
    if repository.target.kind == "s3" and not (
        repository.s3_secret_file and repository.s3_secret_file.is_file()
    ):
        raise UsageError(
            f"secrets/{S3_SECRET} is missing: an s3 target needs the secret access key",
            hint=f"write it (one line) to secrets/{S3_SECRET} with mode 0600",
        )
    if repository.target.kind == "local":
        Path(repository.target.path).mkdir(mode=0o700, parents=True, exist_ok=True)
    # A lock left by an interrupted job (the host lock above says no job of ours runs now).
    try:
        repository.run(["unlock", "--remove-all"], what="restic unlock", timeout=300)
        created = False
    except RepositoryMissing:
        repository.run(["init"], what="restic init", timeout=300)
        created = True
    use_fast_key(repository)
    return created, password_created


def use_fast_key(repository: Repository) -> bool:
    """Replace a local repository's calibrated key by one with cheap scrypt parameters.

    restic 0.14 spends ~0.6 s of scrypt opening the repository in every job (five per
    `backup create`, one inside the Dovecot pause). With mailstack's 256-bit random password
    that work factor guards nothing (see repository_key). Only a repository whose one key is
    opened by a password of that shape is changed, and restic itself must open the new key
    (`key remove` refuses to remove the key it used) before the old one goes. True when the
    key was replaced. Remote targets keep restic's key: restic cannot upload a key file.
    """
    found = _replaceable_key(repository)
    if found is None:
        return False
    old, password, opened = found
    name, content = repository_key.seal_key(
        opened.master_key, password, username=opened.username, hostname=opened.hostname
    )
    new = old.parent / name
    descriptor = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)  # restic's mode
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        repository.run(
            ["--key-hint", name, "key", "remove", old.name], what="restic key remove", timeout=300
        )
    except MailstackError:
        if old.exists():  # never leave the repository without a key that opens it
            new.unlink(missing_ok=True)
        return False
    return True


def _replaceable_key(repository: Repository) -> tuple[Path, str, repository_key.KeyFile] | None:
    """The local repository's one key, when mailstack's password opens it with slow scrypt."""
    if repository.target.kind != "local":
        return None
    try:
        password = repository.password_file.read_text(encoding="utf-8").strip()
        if not repository_key.is_random_token(password):
            return None
        keys = sorted((Path(repository.target.path) / "keys").iterdir())
        if len(keys) != 1:
            return None  # an operator's own keys: leave the repository's keys to them
        opened = repository_key.open_key(keys[0].read_bytes(), password)
    except (OSError, ValueError):
        return None  # not readable from here, or not restic's usual key: keep it
    fast = (repository_key.FAST_N, repository_key.FAST_R, repository_key.FAST_P)
    if (opened.n, opened.r, opened.p) == fast:
        return None
    return keys[0], password, opened


def ensure_ssh_key(stack_root: Path) -> str:
    """secrets/backup_ssh_key (Ed25519, OpenSSH format) for sftp targets; its public line."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415  # sftp only
    from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: PLC0415

    path = stack_root / SECRETS_DIR / SSH_KEY
    if not path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(pem)
    loaded = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    public = loaded.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode() + " mailstack-backup"


def init_repository(root: Path) -> InitRepositoryResult:
    stack = Stack.load(root)
    repository = _repository(stack)
    public = ensure_ssh_key(stack.dir.root) if repository.target.kind == "sftp" else None
    with _job_lock(stack.dir):
        try:
            created, password_created = _prepare(repository, stack.dir.root)
        except MailstackError as e:
            if public is not None:
                e.hint = f"{e.hint or ''}; this stack's key is: {public}".lstrip("; ")
            raise
    return InitRepositoryResult(str(repository.target), created, password_created, public)


# --- create ----------------------------------------------------------------------------------


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


def _running(compose: Compose) -> set[str]:
    return {state.service for state in compose.ps() if state.state == "running"}


def create(stack: Stack, tag: str | None = None, progress: Progress | None = None) -> BackupResult:
    """One consistent snapshot of the running stack (see the module docstring)."""
    tags = [TAG]
    if tag is not None:
        if not _TAG.match(tag):
            raise UsageError(
                f"--tag: {tag[:80]!r} is not a tag (letters, digits, . _ -; 1–64, "
                "starting with a letter or digit)"
            )
        tags.append(tag)
    repository = _repository(stack)
    with _job_lock(stack.dir):
        return _create(stack, repository, tags, progress)


def _create(
    stack: Stack, repository: Repository, tags: list[str], progress: Progress | None
) -> BackupResult:
    started = time.monotonic()
    compose = stack.compose
    running = _running(compose)
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
    repository_created, password_created = _prepare(repository, stack.dir.root)
    _say(progress, 0.0, "dumping the database")
    with tempfile.TemporaryDirectory(prefix="mailstack-backup-") as scratch:
        staging = Path(scratch)
        staging.chmod(0o700)
        manifest = build_manifest(stack)
        dump = compose.exec(
            psql.DB_SERVICE,
            ["pg_dump", "--format=custom", "--username=postgres", f"--dbname={psql.DATABASE}"],
            user="postgres",
            timeout=3600,
        )
        (staging / DB_DUMP).write_bytes(dump)
        manifest["db_dump_sha256"] = hashlib.sha256(dump).hexdigest()
        webmail = _dump_webmail(compose)
        if webmail is not None:
            (staging / WEBMAIL_DUMP).write_bytes(webmail)
            manifest["webmail_dump_sha256"] = hashlib.sha256(webmail).hexdigest()
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        mounts = _snapshot_mounts(stack, staging)
        base = backup_args(stack.config.hostname)
        tag_args = [option for name in tags for option in ("--tag", name)]
        warm = _Summary()
        _say(progress, 0.0, "reading the mail store (warm pass)")
        final = _Summary()
        try:
            repository.stream([*base, "--tag", WARM_TAG], mounts, warm.reader(progress, 0.0, 0.9))
            _say(progress, 0.9, "pausing Dovecot and Redis for the consistent pass")
            pause_started = time.monotonic()
            compose.run(["pause", *PAUSED_SERVICES], timeout=120)
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
    _say(progress, 1.0, "done")
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
                    f"{mailstore.human_size(int(message.get('bytes_done') or 0))} of "
                    f"{mailstore.human_size(total)}",
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


def _say(progress: Progress | None, fraction: float, message: str) -> None:
    if progress:
        progress(fraction, message)


def _snapshot_mounts(stack: Stack, staging: Path) -> list[Mount]:
    project = stack.config.project
    mounts = [Mount(str(stack.dir.root), STACK_PATH), Mount(str(staging), DUMP_PATH, False)]
    mounts += [Mount(f"{project}_{name}", f"{VOLUMES_PATH}/{name}") for name in VOLUMES]
    return mounts


def repository_size(repository: Repository) -> int:
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


# --- list, prune -----------------------------------------------------------------------------


def list_snapshots(stack: Stack) -> list[Snapshot]:
    return _snapshots(_repository(stack))


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


def _resolve_snapshot(repository: Repository, given: str | None) -> Snapshot:
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
    backup = stack.config.backup
    repository = _repository(stack)
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
    with _job_lock(stack.dir):
        _prepare(repository, stack.dir.root)
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


# --- verify ----------------------------------------------------------------------------------


def verify(
    stack: Stack, snapshot: str | None = None, read_percent: int | None = None
) -> VerifyResult:
    repository = _repository(stack)
    with _job_lock(stack.dir):
        return verify_repository(
            repository, snapshot, read_percent or stack.config.backup.verify_read_percent
        )


def verify_repository(
    repository: Repository, snapshot: str | None, read_percent: int
) -> VerifyResult:
    """restic check with a data sample, then a trial restore compared with the manifest."""
    started = time.monotonic()
    if not 1 <= read_percent <= 100:
        raise UsageError(f"--read-data: {read_percent} is not a percentage (1–100)")
    found = _resolve_snapshot(repository, snapshot)
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
    reader = OneShot(
        repository.image,
        ("--data-only", "--file=-", f"/dump/{DB_DUMP}"),
        entrypoint="pg_restore",
        binds=(Bind(str(root / "dump"), "/dump", read_only=True),),
        read_only=True,
    )
    result = DOCKER.run(reader, timeout=3600, what="pg_restore (reading the dump back)")
    return result.stdout.decode("utf-8", errors="replace")


# --- restore ---------------------------------------------------------------------------------


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
    started = time.monotonic()
    parts, mailboxes = parse_only(only)
    if not parts and not mailboxes:
        parts = ("mail", "db", "config")
    repository = _repository(stack)
    with _job_lock(stack.dir):
        found = _resolve_snapshot(repository, snapshot)
        if to is not None:
            return _restore_to_directory(repository, found, parts, mailboxes, to, started)
        running = _running(stack.compose)
        if running and not force:
            raise UsageError(
                f"the stack is running ({', '.join(sorted(running))}): restoring would "
                "overwrite its live data",
                hint="pass --force (a safety snapshot of the current state is taken first), "
                "or --to DIR to restore into a directory",
            )
        safety: str | None = None
        if running:
            _say(progress, 0.0, "taking a safety snapshot of the current state")
            safety = _create(stack, repository, [TAG, SAFETY_TAG], None).snapshot
        _restore_in_place(stack, repository, found, parts, mailboxes, running, progress)
    shown = (*parts, *mailboxes) if parts != ("mail", "db", "config") else ("everything",)
    return RestoreResult(
        found.short_id, shown, str(stack.dir.root), safety, time.monotonic() - started
    )


def _includes(parts: Sequence[str], mailboxes: Sequence[str], full: bool) -> list[str]:
    includes: list[str] = []
    if "config" in parts:
        includes.append(STACK_PATH)
    if "mail" in parts:
        includes.append(f"{VOLUMES_PATH}/mail")
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
    volumes = [name for name in VOLUMES if full or (name == "mail" and wants_mail)]
    services = {"mail": ["dovecot"], "redis": ["rspamd", "redis"], "rspamd": ["rspamd"]}
    stopped = sorted({s for name in volumes for s in services[name] if s in running})
    if stopped:
        _say(progress, 0.3, f"stopping {', '.join(stopped)}")
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
            _say(progress, 0.5, "restoring files")
            repository.run(args, mounts, what="restic restore", timeout=86400)
    finally:
        if stopped:
            compose.run(["start", *stopped], timeout=300)
    if "db" in parts:
        _say(progress, 0.8, "restoring the database")
        if "db" not in _running(compose):
            compose.run(["up", "--detach", "db"], timeout=300)
            wait_healthy(stack, ["db"], 300, None)
        restore_db_dump(repository, found.id, compose)
    if stopped:
        wait_healthy(stack, stopped, 300, None)


def restore_db_dump(
    repository: Repository, snapshot_id: str, compose: Compose, *, lock: bool = True
) -> None:
    """The snapshot's dump into the running db: one transaction, objects replaced."""
    args = ["dump", snapshot_id, f"{DUMP_PATH}/{DB_DUMP}"]
    dump = repository.run(args if lock else ["--no-lock", *args], what="restic dump", timeout=3600)
    compose.exec(
        psql.DB_SERVICE,
        [
            "pg_restore", "--username=postgres", f"--dbname={psql.DATABASE}", "--clean",
            "--if-exists", "--single-transaction", "--exit-on-error", "--no-owner",
        ],
        input=dump,
        user="postgres",
        timeout=3600,
    )  # fmt: skip
    manifest_args = ["dump", snapshot_id, f"{DUMP_PATH}/{MANIFEST}"]
    recorded = json.loads(
        repository.run(manifest_args if lock else ["--no-lock", *manifest_args], what="restic dump")
    )
    if recorded.get("webmail_dump_sha256") and _has_database(compose, WEBMAIL_DATABASE):
        args = ["dump", snapshot_id, f"{DUMP_PATH}/{WEBMAIL_DUMP}"]
        webmail = repository.run(
            args if lock else ["--no-lock", *args], what="restic dump", timeout=3600
        )
        compose.exec(
            psql.DB_SERVICE,
            [
                "pg_restore", "--username=postgres", f"--dbname={WEBMAIL_DATABASE}", "--clean",
                "--if-exists", "--single-transaction", "--exit-on-error", "--no-owner",
                f"--role={WEBMAIL_DATABASE}",
            ],
            input=webmail,
            user="postgres",
            timeout=3600,
        )  # fmt: skip


def _has_database(compose: Compose, name: str) -> bool:
    found = compose.exec(
        psql.DB_SERVICE,
        ["psql", "--no-psqlrc", "--tuples-only", "--no-align", "--dbname=postgres",
         "--set", f"name={name}", "--file=-"],
        input=b"SELECT 1 FROM pg_database WHERE datname = :'name';\n",
        user="postgres",
    )  # fmt: skip
    return found.strip() == b"1"


def _dump_webmail(compose: Compose) -> bytes | None:
    """Roundcube's database as a custom-format dump, or None when the stack has none."""
    if not _has_database(compose, WEBMAIL_DATABASE):
        return None
    return compose.exec(
        psql.DB_SERVICE,
        ["pg_dump", "--format=custom", "--username=postgres", f"--dbname={WEBMAIL_DATABASE}"],
        user="postgres",
        timeout=3600,
    )


# --- disaster recovery -----------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A repository named on the command line (a new host has no mailstack.yaml yet)."""

    target: str
    password: str = field(repr=False)
    ssh_key: Path | None = None
    ssh_host_key: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_file: Path | None = None


def recover(
    source: Source,
    new_dir: Path,
    snapshot: str | None = None,
    registry: str | None = None,
    progress: Progress | None = None,
) -> DisasterRecoveryResult:
    """Rebuild a stack directory and its volumes from a snapshot (a new host, an empty dir)."""
    root = new_dir.resolve()
    if root.exists() and any(root.iterdir()):
        raise UsageError(
            f"--dir: {root} is not empty",
            hint="name a new or empty directory; an existing stack is restored with "
            "`mailstack backup restore`",
        )
    target = parse_target(source.target)
    if target.kind == "sftp" and (source.ssh_key is None or source.ssh_host_key is None):
        raise UsageError("--from: an sftp target needs --ssh-key and --ssh-host-key")
    host_key = None
    if source.ssh_host_key is not None:
        try:
            host_key = check_ssh_host_key(source.ssh_host_key)
        except ValueError as e:
            raise UsageError(f"--ssh-host-key: {source.ssh_host_key[:60]!r} {e}") from None
    if not source.password.strip():
        raise UsageError("the repository password is empty")
    made_dir = not root.exists()
    made_volumes: list[str] = []
    try:
        return _recover(source, target, host_key, root, snapshot, registry, progress, made_volumes)
    except BaseException:
        # All or nothing: what this run made goes again (nothing that was there before).
        for volume in made_volumes:
            DOCKER.remove_volume(volume)
        if made_dir:
            shutil.rmtree(root, ignore_errors=True)
        else:
            for child in root.iterdir() if root.exists() else ():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise


def _recover(  # the parts of one recovery, checked by recover()
    source: Source,
    target: Target,
    host_key: str | None,
    root: Path,
    snapshot: str | None,
    registry: str | None,
    progress: Progress | None,
    made_volumes: list[str],
) -> DisasterRecoveryResult:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mailstack-recover-") as scratch:
        password_file = Path(scratch) / BACKUP_PASSWORD
        password_file.write_text(source.password.strip() + "\n")
        password_file.chmod(0o600)
        repository = Repository(
            # The stack directory is not there yet: the image is recorded nowhere.
            image=ensure_image(Path(scratch), registry, None),
            target=target,
            password_file=password_file,
            name=f"mailstack-recover-{os.getpid()}",
            cache_volume=None,
            ssh_key=source.ssh_key,
            ssh_host_key=host_key,
            s3_access_key_id=source.s3_access_key_id,
            s3_secret_file=source.s3_secret_file,
        )
        found = _resolve_snapshot(repository, snapshot)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        _say(progress, 0.1, f"restoring the stack directory from snapshot {found.short_id}")
        repository.run(
            ["--no-lock", "restore", found.id, "--target", "/restore", "--include", STACK_PATH],
            [Mount(str(root), f"/restore{STACK_PATH}", False)],
            what="restic restore (stack directory)",
            timeout=86400,
        )
        stack = Stack.load(root)
        project = stack.config.project
        existing = [name for name in VOLUMES if _volume_exists(f"{project}_{name}")]
        existing += ["db"] if _volume_exists(f"{project}_db") else []
        if existing:
            raise UsageError(
                f"volumes of project {project} already exist on this host "
                f"({', '.join(f'{project}_{n}' for n in existing)}): refusing to overwrite them",
                hint="a stack with this project name lives here; remove it first "
                "(`mailstack down --volumes` in its directory) or restore elsewhere",
            )
        for name in VOLUMES:
            _create_volume(project, name)
            made_volumes.append(f"{project}_{name}")
        made_volumes.append(f"{project}_db")  # made by `up db` below
        _say(progress, 0.3, "restoring mail, Redis and rspamd data")
        repository.run(
            ["--no-lock", "restore", found.id, "--target", "/restore",
             *[o for name in VOLUMES for o in ("--include", f"{VOLUMES_PATH}/{name}")]],
            [Mount(f"{project}_{name}", f"/restore{VOLUMES_PATH}/{name}", False) for name in VOLUMES],  # noqa: E501
            what="restic restore (volumes)",
            timeout=86400,
        )  # fmt: skip
        _say(progress, 0.7, "starting the database and restoring its dump")
        # A fresh host: the db image first (the restored .env names images built elsewhere).
        builder.ensure_images(
            root,
            [psql.DB_SERVICE],
            registry=stack.config.images.registry,
            apt_sources=stack.config.images.apt_sources_path,
        )
        stack.compose.run(["up", "--detach", "db"], timeout=600)
        try:
            wait_healthy(stack, ["db"], 300, None)
            restore_db_dump(repository, found.id, stack.compose, lock=False)
        finally:
            stack.compose.run(["down", "--remove-orphans"], timeout=300, check=False)
        # The repository password of the restored stack is the one that opened it.
        secrets = root / SECRETS_DIR
        if not (secrets / BACKUP_PASSWORD).exists():
            secrets.mkdir(mode=0o700, exist_ok=True)
            shutil.copy2(password_file, secrets / BACKUP_PASSWORD)
        mailboxes = len(_dump_text(repository, found.id, INVENTORY).splitlines())
        try:
            manifest = json.loads(_dump_text(repository, found.id, MANIFEST))
            made_by = str(manifest["mailstack_version"])
        except (ValueError, KeyError, TypeError):
            made_by = "unknown"
    seconds = time.monotonic() - started
    return DisasterRecoveryResult(root, found.short_id, project, mailboxes, seconds, made_by)


def _dump_text(repository: Repository, snapshot_id: str, name: str) -> str:
    """One file of the snapshot's dump/ directory as text."""
    output = repository.run(
        ["--no-lock", "dump", snapshot_id, f"{DUMP_PATH}/{name}"], what="restic dump"
    )
    return output.decode("utf-8", errors="replace")


def _volume_exists(name: str) -> bool:
    return DOCKER.volume_exists(name)


def _create_volume(project: str, name: str) -> None:
    """A named volume as Compose makes it (its labels), so `up` adopts it without a warning."""
    labels = {"com.docker.compose.project": project, "com.docker.compose.volume": name}
    DOCKER.create_volume(f"{project}_{name}", labels)
