"""`mailstack restore`: disaster recovery on a new host. A whole stack (its directory, its
volumes and its database) rebuilt from a snapshot, all or nothing."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mailstack import __version__
from mailstack.adapters import psql
from mailstack.adapters.docker import DOCKER
from mailstack.backup.dumps import restore_db_dump
from mailstack.backup.layout import (
    DUMP_PATH,
    INVENTORY,
    MANIFEST,
    STACK_PATH,
    VOLUMES_PATH,
    volumes_of,
)
from mailstack.backup.repository import Progress, ensure_image, say
from mailstack.backup.restic import Mount, Repository
from mailstack.backup.snapshots import resolve_snapshot
from mailstack.backup.target import Target, parse_target
from mailstack.errors import UsageError
from mailstack.images import builder
from mailstack.runtime.lifecycle import wait_healthy
from mailstack.stack.config_values import check_ssh_host_key
from mailstack.stack.secrets import BACKUP_PASSWORD, SECRETS_DIR
from mailstack.stack.stackdir import Stack


@dataclass(frozen=True)
class Source:
    """A repository named on the command line (a new host has no mailstack.yaml yet)."""

    target: str
    password: str = field(repr=False)
    ssh_key: Path | None = None
    ssh_host_key: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_file: Path | None = None


@dataclass(frozen=True)
class DisasterRecoveryResult:
    """The stack a recovery rebuilt, and what to run next."""

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
        found = resolve_snapshot(repository, snapshot)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        say(progress, 0.1, f"restoring the stack directory from snapshot {found.short_id}")
        repository.run(
            ["--no-lock", "restore", found.id, "--target", "/restore", "--include", STACK_PATH],
            [Mount(str(root), f"/restore{STACK_PATH}", False)],
            what="restic restore (stack directory)",
            timeout=86400,
        )
        stack = Stack.load(root)
        project = stack.config.project
        volumes = volumes_of(stack.config)
        existing = [name for name in volumes if _volume_exists(f"{project}_{name}")]
        existing += ["db"] if _volume_exists(f"{project}_db") else []
        if existing:
            raise UsageError(
                f"volumes of project {project} already exist on this host "
                f"({', '.join(f'{project}_{n}' for n in existing)}): refusing to overwrite them",
                hint="a stack with this project name lives here; remove it first "
                "(`mailstack down --volumes` in its directory) or restore elsewhere",
            )
        for name in volumes:
            _create_volume(project, name)
            made_volumes.append(f"{project}_{name}")
        made_volumes.append(f"{project}_db")  # made by `up db` below
        say(progress, 0.3, f"restoring the volumes ({', '.join(volumes)})")
        repository.run(
            ["--no-lock", "restore", found.id, "--target", "/restore",
             *[o for name in volumes for o in ("--include", f"{VOLUMES_PATH}/{name}")]],
            [Mount(f"{project}_{name}", f"/restore{VOLUMES_PATH}/{name}", False) for name in volumes],  # noqa: E501
            what="restic restore (volumes)",
            timeout=86400,
        )  # fmt: skip
        say(progress, 0.7, "starting the database and restoring its dump")
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
