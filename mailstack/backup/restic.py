"""The restic runner: one job in the backup image, its failures as one line.

restic runs in the `backup` image (Debian's restic, one `docker run --rm` per job), so the
host needs nothing but Docker, the version matches the stack's images, and the named volumes
are read through Docker wherever its data root is.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mailstack.adapters.docker import DOCKER, Bind, OneShot
from mailstack.backup.target import Target
from mailstack.errors import ExternalCommandFailed, MailstackError, UsageError
from mailstack.stack.secrets import BACKUP_PASSWORD

S3_SECRET = "backup_s3_secret_access_key"  # noqa: S105  # a file name, not a secret
# Capabilities of the backup container: read every file (backup), and write them back with
# their owners and modes (restore). Nothing else; no new privileges.
CAPABILITIES = ("DAC_READ_SEARCH", "DAC_OVERRIDE", "CHOWN", "FOWNER")


@dataclass(frozen=True)
class Mount:
    """A host path or a named volume in a job's container."""

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
    """No restic repository at the target (yet)."""


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
