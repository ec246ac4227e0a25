"""The stack's backup repository and what every job on it shares: where mailstack.yaml puts
it, its password, SSH key and S3 secret, the repository made on first use (`backup init`),
one job per stack at a time, and the progress callback the jobs report to."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mailstack.backup.restic import S3_SECRET, Repository, RepositoryMissing
from mailstack.backup.target import parse_target
from mailstack.errors import MailstackError, UsageError
from mailstack.images import builder, repository_key
from mailstack.stack.config_sections import Backup as BackupConfig
from mailstack.stack.secrets import BACKUP_PASSWORD, SECRETS_DIR, ensure_backup_password
from mailstack.stack.stackdir import Stack, StackDir

BACKUP_IMAGE = "backup"  # compose/backup: restic, run for one job at a time
SSH_KEY = "backup_ssh_key"

Progress = Callable[[float, str], None]


def say(progress: Progress | None, fraction: float, message: str) -> None:
    """Report a job's step to its progress callback, if it has one."""
    if progress:
        progress(fraction, message)


@dataclass(frozen=True)
class InitRepositoryResult:
    """What `backup init` made: the repository, the password, an sftp target's key."""

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
    """The repository of a backup config; a local target inside the stack is refused."""
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


def stack_repository(stack: Stack) -> Repository:
    """The repository of mailstack.yaml's backup section, as this stack's jobs reach it."""
    config = stack.config
    return repository_for(
        stack.dir.root,
        config.backup,
        config.project,
        config.images.registry,
        config.images.apt_sources_path,
    )


@contextlib.contextmanager
def job_lock(stack_dir: StackDir) -> Iterator[None]:
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


def prepare(repository: Repository, stack_root: Path) -> tuple[bool, bool]:
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
    """The repository (and an sftp target's SSH key) without backing up yet."""
    stack = Stack.load(root)
    repository = stack_repository(stack)
    public = ensure_ssh_key(stack.dir.root) if repository.target.kind == "sftp" else None
    with job_lock(stack.dir):
        try:
            created, password_created = prepare(repository, stack.dir.root)
        except MailstackError as e:
            if public is not None:
                e.hint = f"{e.hint or ''}; this stack's key is: {public}".lstrip("; ")
            raise
    return InitRepositoryResult(str(repository.target), created, password_created, public)
