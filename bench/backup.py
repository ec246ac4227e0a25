"""Measure backups: full, incremental after ~1% change, full restore, and `tar | zstd` beside.

Usage (as root, on a host prepared by scripts/setup-host.sh; needs zstd for the reference):
    .venv/bin/python bench/backup.py [--size-mib 1024] [--keep] [--calibrated-key]

A synthetic mail store (maildir layout, sizes like real mail: mostly 2 to 60 KB, a few MB-sized
attachments; random bytes, because mail_crypt makes stored mail incompressible) is written
into a Docker volume of its own. The backup engine is the one `mailstack backup` runs: the
backup image through mailstack.backup.restic.Repository, with the same container options and
mount layout, and the repository key `backup create` gives a new repository (cheap scrypt;
--calibrated-key keeps restic's own, as before). Besides the incremental run after ~1% new
mail, a run with nothing changed shows the fixed cost of one restic job (container, key,
lock, index, a scan of every file). The reference is mailcow's approach: a plain `tar | zstd`
of the same volume. Prints one figure per line; everything it made is removed at the end
unless --keep. Throughput is in MiB/s (2^20 bytes) and, for the restore, also MB/s (10^6).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailstack.backup.creation import backup_args, repository_size
from mailstack.backup.layout import VOLUMES_PATH
from mailstack.backup.repository import ensure_image, use_fast_key
from mailstack.backup.restic import Mount, Repository
from mailstack.backup.target import parse_target

PROJECT = "mailstack-bench-backup"
MIB = 1024 * 1024
MB = 1_000_000


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def volume(name: str) -> Path:
    docker("volume", "create", name)
    return Path(docker("volume", "inspect", "--format", "{{.Mountpoint}}", name))


def fill(root: Path, size: int, rng: random.Random) -> tuple[int, int]:
    """A maildir tree of about `size` bytes; returns (files, bytes)."""
    sizes = [2_000, 4_000, 8_000, 15_000, 30_000, 60_000, 120_000, 2_000_000]
    weights = [20, 20, 20, 15, 10, 8, 5, 2]
    written = files = 0
    while written < size:
        user = f"user{files % 40:02d}"
        folder = ("cur", ".Archive/cur", ".Sent/cur")[files % 3]
        directory = root / "example.test" / user / "Maildir" / folder
        directory.mkdir(parents=True, exist_ok=True)
        length = rng.choices(sizes, weights)[0]
        (directory / f"{1700000000 + files}.M{files}P1.bench,S={length}:2,S").write_bytes(
            os.urandom(length)
        )
        written += length
        files += 1
    return files, written


def change_one_percent(root: Path, total: int, rng: random.Random) -> int:
    """New mail worth ~1% of the store, and ~0.1% deleted (expunged); returns bytes added."""
    added = 0
    inbox = root / "example.test" / "user00" / "Maildir" / "new"
    inbox.mkdir(parents=True, exist_ok=True)
    number = 0
    while added < total // 100:
        length = rng.choice([4_000, 15_000, 60_000])
        (inbox / f"1800000000.M{number}P2.bench").write_bytes(os.urandom(length))
        added += length
        number += 1
    victims = sorted(root.rglob("*.bench,S=*"))[: max(1, number // 10)]
    for path in victims:
        path.unlink()
    return added


def mountpoint(name: str) -> str:
    return docker("volume", "inspect", "--format", "{{.Mountpoint}}", name)


def tar_zstd(source: str, archive: Path) -> None:
    """mailcow's approach: the whole volume through tar and zstd into one file."""
    with archive.open("wb") as out:
        tar = subprocess.Popen(["tar", "-C", source, "-cf", "-", "."], stdout=subprocess.PIPE)
        subprocess.run(["zstd", "-q", "-T0", "-3", "-c"], stdin=tar.stdout, stdout=out, check=True)
        tar.wait()


def timed(work: Callable[[], object]) -> float:
    started = time.monotonic()
    work()
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--calibrated-key", action="store_true", help="keep restic's calibrated scrypt key"
    )
    options = parser.parse_args()
    rng = random.Random(6)
    scratch = Path(tempfile.mkdtemp(prefix="mailstack-bench-backup-"))
    mail_volume = f"{PROJECT}_mail"
    restored_volume = f"{PROJECT}_restored"
    password = scratch / "password"
    password.write_text(secrets.token_urlsafe(32) + "\n")  # as mailstack generates it
    password.chmod(0o600)
    repo = scratch / "repo"
    repo.mkdir()
    repository = Repository(
        image=ensure_image(scratch, None, None),
        target=parse_target(str(repo)),
        password_file=password,
        name=f"{PROJECT}-job",
        cache_volume=f"{PROJECT}-cache",
    )
    mounts = [Mount(mail_volume, f"{VOLUMES_PATH}/mail")]
    try:
        files, size = fill(volume(mail_volume), options.size_mib * MIB, rng)
        print(f"mail store: {files} files, {size / MIB:.0f} MiB")
        repository.run(["init"])  # then, as `backup create` does for a new repository:
        fast_key = not options.calibrated_key and use_fast_key(repository)
        key = "cheap scrypt (N=2^15, r=8, p=1)" if fast_key else "restic's calibrated scrypt"
        print(f"repository key: {key}")
        run = [*backup_args("bench"), "--quiet"]  # what `backup create` runs

        def backup_once() -> dict[str, int]:
            output = repository.run(run, mounts)
            lines = [json.loads(line) for line in output.decode().splitlines() if line]
            summary: dict[str, int] = lines[-1]
            return summary

        holder: dict[str, dict[str, int]] = {}
        full = timed(lambda: holder.setdefault("full", backup_once()))
        stored_full = repository_size(repository)
        print(
            f"full backup: {full:.2f}s, {size / MIB / full:.0f} MiB/s, repository {stored_full / MIB:.0f} MiB"
        )
        added = change_one_percent(Path(mountpoint(mail_volume)), size, rng)
        incremental = timed(lambda: holder.setdefault("incremental", backup_once()))
        stored_after = repository_size(repository)
        print(
            f"incremental after {added / MIB:.1f} MiB new mail (~1%): {incremental:.2f}s "
            f"({100 * incremental / full:.1f}% of the full run), "
            f"{holder['incremental'].get('data_added', 0) / MIB:.1f} MiB added, repository +"
            f"{(stored_after - stored_full) / MIB:.1f} MiB"
        )
        unchanged = timed(backup_once)
        print(
            f"backup with nothing changed (the fixed cost of a run): {unchanged:.2f}s "
            f"({100 * unchanged / full:.1f}% of the full run)"
        )
        volume(restored_volume)
        restore = timed(
            lambda: repository.run(
                ["restore", "latest", "--target", "/restore"],
                [Mount(restored_volume, f"/restore{VOLUMES_PATH}/mail", False)],
            )
        )
        print(
            f"full restore: {restore:.1f}s, {size / MIB / restore:.0f} MiB/s "
            f"= {size / MB / restore:.0f} MB/s"
        )
        archive = scratch / "mail.tar.zst"
        reference = timed(lambda: tar_zstd(mountpoint(mail_volume), archive))
        print(
            f"tar | zstd of the same store (mailcow's approach): {reference:.1f}s, "
            f"{size / MIB / reference:.0f} MiB/s, {archive.stat().st_size / MIB:.0f} MiB; "
            f"a second run would take as long and store as much again"
        )
        print(
            f"ratios: restic full / tar|zstd = {full / reference:.2f}; incremental / full = "
            f"{incremental / full:.3f}; incremental / tar|zstd = {incremental / reference:.3f}"
        )
    finally:
        if not options.keep:
            for name in (mail_volume, restored_volume, f"{PROJECT}-cache"):
                subprocess.run(
                    ["docker", "volume", "rm", "--force", name], capture_output=True, check=False
                )
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
