"""Backups proven to restore: restic snapshots of the real stack, restored on a "new host".

The module fills two mailboxes over IMAP, backs up to a local repository, shows what an
incremental run adds, that `verify` catches a damaged pack and a wrong password, that an
interrupted run leaves earlier snapshots intact (and the scheduled command succeeds next),
that SFTP works against a real sshd and a full disk is named; the last test destroys the stack
with its volumes and rebuilds it with `mailstack restore` in a new directory: every message
byte-identical over IMAP, the same passwords, DKIM keys and operator edits.
"""

from __future__ import annotations

import contextlib
import hashlib
import imaplib
import json
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
import pytest
import yaml

from tests.e2e.conftest import HOSTNAME, PROJECT, RunningStack, mailstack
from tests.e2e.mail import (
    OUTSIDE_SENDER,
    fetch_by_subject,
    imaps,
    postmaster_mailbox,
    unique_subject,
)
from tests.e2e.test_policy import (
    deliver_inbound,
    from_mailbox,
    from_sink,
    message,
    resolver_txt,
    submit,
)

pytestmark = pytest.mark.e2e

PASSWORD = "Correct-horse-42-battery"  # a test account
FOLDERS = ("INBOX", "Archive", "Projects")
MESSAGES_PER_MAILBOX = 150
JOB_CONTAINER = f"{PROJECT}-backup-job"


@dataclass
class Filled:
    """What the test stored: {address: {folder: [sha256 of each message]}}."""

    messages: dict[str, dict[str, list[str]]]
    bytes_total: int


def _message_bytes(rng: random.Random, address: str, number: int, size: int) -> bytes:
    lines = [
        "From: Archive Bot <bot@sender.example>",
        f"To: {address}",
        f"Subject: backup e2e {number} {uuid.uuid4().hex}",
        f"Message-ID: <{uuid.uuid4().hex}@sender.example>",
        "Date: Tue, 01 Dec 2026 10:00:00 +0000",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "",
    ]
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 "
    body_lines = max(1, size // 72)
    lines += ["".join(rng.choices(alphabet, k=70)) for _ in range(body_lines)]
    return ("\r\n".join(lines) + "\r\n").encode()


def _fetch_all(imap: imaplib.IMAP4_SSL, folder: str) -> list[bytes]:
    imap.select(f'"{folder}"', readonly=True)
    _, found = imap.search(None, "ALL")
    if not found[0]:
        return []
    _, data = imap.fetch("1:*", "(BODY.PEEK[])")
    return [item[1] for item in data if isinstance(item, tuple)]


def _digests(stack: RunningStack, address: str) -> dict[str, list[str]]:
    """SHA-256 of every message per folder, over IMAPS (waits for a restarted Dovecot)."""
    deadline = time.monotonic() + 90
    while True:
        try:
            return _digests_once(stack, address)
        except OSError:  # Dovecot is still starting after a restore
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def _digests_once(stack: RunningStack, address: str) -> dict[str, list[str]]:
    with imaps(stack) as imap:
        imap.login(address, PASSWORD)
        return {
            folder: sorted(hashlib.sha256(raw).hexdigest() for raw in _fetch_all(imap, folder))
            for folder in FOLDERS
        }


@contextlib.contextmanager
def backup_settings(stack: RunningStack, **changes: Any) -> Iterator[None]:
    """mailstack.yaml's backup section changed for the duration (the file restored after)."""
    path = stack.root / "mailstack.yaml"
    before = path.read_text()
    config = yaml.safe_load(before)
    config["backup"].update(changes)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        yield
    finally:
        path.write_text(before)


@pytest.fixture(scope="module")
def repository(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local repository outside the stack directory, set as backup.target."""
    repo = tmp_path_factory.mktemp("backup") / "repo"
    path = stack.root / "mailstack.yaml"
    config = yaml.safe_load(path.read_text())
    config["backup"]["target"] = str(repo)
    # Read by every backup command; nothing generated depends on it (no render needed).
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    yield repo
    # restic's cache volume of this project (outside Compose, so `down --volumes` keeps it).
    subprocess.run(
        ["docker", "volume", "rm", "--force", f"{PROJECT}-backup-cache"],
        capture_output=True,
        check=False,
    )


@pytest.fixture(scope="module")
def filled(stack: RunningStack, repository: Path) -> Filled:
    """Two mailboxes, three folders each, messages from 1 KB to 1 MB (APPEND)."""
    rng = random.Random(6)  # test data, not cryptography
    messages: dict[str, dict[str, list[str]]] = {}
    total = 0
    for _ in range(2):
        address, _ = stack.new_mailbox(PASSWORD)
        stored: dict[str, list[str]] = {folder: [] for folder in FOLDERS}
        with imaps(stack) as imap:
            imap.login(address, PASSWORD)
            for folder in FOLDERS[1:]:
                imap.create(folder)
            for number in range(MESSAGES_PER_MAILBOX):
                size = int(
                    rng.choice((2_000, 10_000, 50_000, 200_000, 1_000_000)) * rng.uniform(0.5, 1)
                )
                raw = _message_bytes(rng, address, number, size)
                folder = FOLDERS[number % len(FOLDERS)]
                status, _ = imap.append(f'"{folder}"', None, None, raw)
                assert status == "OK"
                stored[folder].append(hashlib.sha256(raw).hexdigest())
                total += len(raw)
        messages[address] = {folder: sorted(found) for folder, found in stored.items()}
    return Filled(messages, total)


@pytest.fixture(scope="module")
def first_backup(stack: RunningStack, filled: Filled) -> dict[str, Any]:
    # An operator's edit to a generated file, to survive the disaster below.
    dovecot_conf = stack.root / "config" / "dovecot" / "dovecot.conf"
    dovecot_conf.write_text(dovecot_conf.read_text() + "# operator note: kept by backups\n")
    result = stack.cli("backup", "create", "--tag", "first", "--json", timeout=900)
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def test_backup_then_one_new_message_adds_a_small_fraction(
    stack: RunningStack, first_backup: dict[str, Any], filled: Filled
) -> None:
    address = next(iter(filled.messages))
    subject = unique_subject("backup incremental")
    deliver_inbound(message(OUTSIDE_SENDER, address, subject), OUTSIDE_SENDER, address)
    from_mailbox(stack, address, PASSWORD, subject)  # delivered (INBOX or Junk)
    second = json.loads(stack.cli("backup", "create", "--json", timeout=900).stdout)
    print(
        f"\nfirst backup: {first_backup['bytes_new']} bytes new "
        f"({first_backup['files']} files, {first_backup['seconds']:.1f}s, mail paused "
        f"{first_backup['pause_seconds']:.2f}s); second: {second['bytes_new']} bytes new "
        f"({second['seconds']:.1f}s, paused {second['pause_seconds']:.2f}s); repository "
        f"{second['bytes_stored']} bytes; {filled.bytes_total} bytes of mail appended"
    )
    assert first_backup["bytes_new"] > filled.bytes_total // 2  # the mail is really in it
    # What else changes between two runs is metadata: Dovecot's indexes and caches of the
    # folders read meanwhile, the database dump, Redis's log.
    assert second["bytes_new"] < first_backup["bytes_new"] * 0.10
    listed = json.loads(stack.cli("backup", "list", "--json").stdout)
    assert [s["short_id"] for s in listed][-2:] == [first_backup["snapshot"], second["snapshot"]]
    assert "first" in listed[-2]["tags"]
    assert not any("warm-pass" in s["tags"] for s in listed)  # the warm pass is forgotten


def test_the_repository_key_has_cheap_scrypt_and_restic_opens_it(
    stack: RunningStack, repository: Path, first_backup: dict[str, Any]
) -> None:
    # restic's own key (scrypt calibrated to ~0.5 s) was replaced by one with p=1: the
    # password is mailstack's 256-bit token. restic opened only that key in the jobs since.
    keys = list((repository / "keys").iterdir())
    assert len(keys) == 1
    key = json.loads(keys[0].read_bytes())
    assert (key["kdf"], key["N"], key["r"], key["p"]) == ("scrypt", 2**15, 8, 1)
    assert hashlib.sha256(keys[0].read_bytes()).hexdigest() == keys[0].name
    listed = json.loads(stack.cli("backup", "list", "--json").stdout)
    assert first_backup["snapshot"] in [s["short_id"] for s in listed]


def test_verify_restores_a_snapshot_and_compares_it_with_the_manifest(
    stack: RunningStack, first_backup: dict[str, Any], filled: Filled
) -> None:
    result = stack.cli("backup", "verify", "--json", timeout=900)
    verdict = json.loads(result.stdout)
    assert verdict["ok"] is True
    by_name = {check["name"]: check for check in verdict["checks"]}
    assert set(by_name) >= {"repository", "stack files", "database dump", "mail"}
    stored = sum(len(found) for folders in filled.messages.values() for found in folders.values())
    # Every message of the newest snapshot, ours among them (other tests' mailboxes too).
    counted = re.search(r"(\d+) messages in \d+ mailbox", by_name["mail"]["detail"])
    assert counted is not None, by_name["mail"]
    assert int(counted.group(1)) >= stored + 1


def test_verify_fails_on_a_corrupted_pack_file(
    stack: RunningStack, repository: Path, first_backup: dict[str, Any], tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged-repo"
    shutil.copytree(repository, damaged)
    pack = max((damaged / "data").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    with pack.open("r+b") as handle:
        handle.seek(pack.stat().st_size // 2)
        handle.write(b"\x00mailstack-damage\x00" * 8)
    # The scheduled trial restore's own command (from the unit `backup schedule on` writes),
    # reading all the data; then what its OnFailure= starts, as systemd would.
    units = tmp_path / "units"
    postmaster, password = postmaster_mailbox(stack)
    with backup_settings(stack, target=str(damaged), verify_read_percent=100):
        stack.cli("backup", "schedule", "on", "--unit-dir", str(units))
        try:
            (verify_command,) = unit_commands(units / f"mailstack-verify-{PROJECT}.service")
            result = subprocess.run(verify_command, capture_output=True, text=True,
                                    check=False, timeout=900)  # fmt: skip
            assert result.returncode == 1, result.stdout + result.stderr
            assert "is damaged" in result.stderr
            assert pack.name[:8] in result.stderr or "pack" in result.stderr.lower()
            assert "Traceback" not in result.stderr
            (alert_command,) = unit_commands(units / f"mailstack-alert-{PROJECT}@.service")
            verify_unit = f"mailstack-verify-{PROJECT}.service"
            alerted = subprocess.run([*alert_command[:-1], verify_unit], capture_output=True,
                                     text=True, check=False, timeout=300)  # fmt: skip
        finally:
            stack.cli("backup", "schedule", "off", "--unit-dir", str(units))
    assert alerted.returncode == 0 and "the postmaster was mailed" in alerted.stdout, alerted
    fetch_by_subject(stack, postmaster, password,
                     f"[mailstack] {HOSTNAME}: the backup verify (trial restore) failed")  # fmt: skip


def test_verify_fails_on_a_wrong_password(
    stack: RunningStack, first_backup: dict[str, Any]
) -> None:
    secret = stack.root / "secrets" / "backup_password"
    kept = secret.read_bytes()
    secret.write_text("not-the-password\n")
    try:
        result = stack.cli("backup", "verify", check=False, timeout=300)
    finally:
        secret.write_bytes(kept)
    assert result.returncode == 1
    assert "wrong password for the backup repository" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_interrupted_backup_keeps_the_snapshots_and_the_scheduled_run_succeeds(
    stack: RunningStack, first_backup: dict[str, Any], tmp_path: Path
) -> None:
    before = [s["id"] for s in json.loads(stack.cli("backup", "list", "--json").stdout)]
    job = subprocess.Popen(  # the real CLI, argv from constants
        [sys.executable, "-m", "mailstack", "backup", "create", "--dir", str(stack.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = False
    deadline = time.monotonic() + 300
    while job.poll() is None and time.monotonic() < deadline and not killed:
        args = subprocess.run(
            ["docker", "inspect", "--format", "{{json .Args}}", JOB_CONTAINER],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if '"backup"' in args:  # restic is reading the stack: pull the plug
            subprocess.run(["docker", "kill", JOB_CONTAINER], capture_output=True, check=False)
            killed = True
        time.sleep(0.05)
    _, stderr = job.communicate(timeout=300)
    assert killed, "the backup finished before it could be interrupted"
    assert job.returncode == 1
    assert "Traceback" not in stderr
    states = {s["Service"]: s["State"] for s in _ps(stack)}
    assert states["dovecot"] == "running" and states["redis"] == "running"  # never left paused
    after = [s["id"] for s in json.loads(stack.cli("backup", "list", "--json").stdout)]
    assert after == before

    # The daily timer's own command (from the unit file mailstack writes) is the next run.
    units = tmp_path / "units"
    units.mkdir()
    stack.cli("backup", "schedule", "on", "--unit-dir", str(units))
    timer = (units / f"mailstack-backup-{PROJECT}.timer").read_text()
    assert "OnCalendar=*-*-* 03:30:00 UTC" in timer and "Persistent=true" in timer
    commands = unit_commands(units / f"mailstack-backup-{PROJECT}.service")
    assert [command[3:5] for command in commands] == [["backup", "create"], ["backup", "prune"]]
    run = subprocess.run(commands[0], capture_output=True, text=True, check=False, timeout=900)
    assert run.returncode == 0, run.stderr
    listed = json.loads(stack.cli("backup", "list", "--json").stdout)
    assert [s["id"] for s in listed][: len(before)] == before
    assert "daily" in listed[-1]["tags"]
    stack.cli("backup", "schedule", "off", "--unit-dir", str(units))
    assert not list(units.iterdir())


def unit_commands(unit: Path) -> list[list[str]]:
    """A systemd unit's ExecStart= commands, as systemd splits them."""
    return [
        shlex.split(line.removeprefix("ExecStart="))
        for line in unit.read_text().splitlines()
        if line.startswith("ExecStart=")
    ]


def _ps(stack: RunningStack) -> list[dict[str, Any]]:
    output = stack.compose("ps", "--all", "--format", "json").stdout.decode()
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, str, Path]]:
    """A real OpenSSH sshd on loopback: (port, host key line, authorized_keys path)."""
    if not Path("/usr/sbin/sshd").exists():
        pytest.fail("the SFTP test needs openssh-server: run scripts/setup-host.sh --dev")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "host_key")],
        check=True,
    )
    authorized = tmp_path / "authorized_keys"
    authorized.touch(mode=0o600)
    port = _free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host_key'}\n"
        f"AuthorizedKeysFile {authorized}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPidFile none\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    daemon = subprocess.Popen(  # argv from constants
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.2)
        host_key = " ".join((tmp_path / "host_key.pub").read_text().split()[:2])
        yield port, host_key, authorized
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)


def test_sftp_target_on_a_real_sshd(
    stack: RunningStack,
    first_backup: dict[str, Any],
    sshd: tuple[int, str, Path],
    tmp_path: Path,
) -> None:
    port, host_key, authorized = sshd
    remote = tmp_path / "sftp-repo"
    target = f"sftp://root@127.0.0.1:{port}{remote}"
    with backup_settings(stack, target=target, ssh_host_key=host_key):
        public_key = stack.cli("backup", "ssh-key").stdout  # made now, not yet authorized
        refused = stack.cli("backup", "list", check=False, timeout=300)
        assert refused.returncode == 1 and "unreachable" in refused.stderr, refused.stderr
        assert "authorize the public key" in refused.stderr
        authorized.write_text(public_key)
        created = json.loads(stack.cli("backup", "create", "--json", timeout=900).stdout)
        assert created["repository_created"] is True
        listed = json.loads(stack.cli("backup", "list", "--json").stdout)
        assert [s["short_id"] for s in listed] == [created["snapshot"]]
        assert (remote / "config").is_file() and list((remote / "data").rglob("*"))
        # A host key that does not match is refused: nothing is trusted on first use.
        _, other_key = _other_host_key(tmp_path)
        with backup_settings(stack, target=target, ssh_host_key=other_key):
            spoofed = stack.cli("backup", "list", check=False, timeout=300)
        assert spoofed.returncode == 1 and "ssh_host_key does not match" in spoofed.stderr


def _other_host_key(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path, " ".join(path.with_suffix(".pub").read_text().split()[:2])


@pytest.fixture
def s3_server() -> Iterator[int]:
    """moto's S3 server on loopback (the S3 stand-in: no object store is reachable here)."""
    server = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    port = _free_port()
    process = subprocess.Popen(  # argv from constants
        [server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_s3_target(stack: RunningStack, first_backup: dict[str, Any], s3_server: int) -> None:
    secret = stack.root / "secrets" / "backup_s3_secret_access_key"
    secret.write_text("moto-secret-key\n")
    secret.chmod(0o600)
    target = f"s3+http://127.0.0.1:{s3_server}/mailstack-backups/e2e"
    try:
        with backup_settings(stack, target=target, s3_access_key_id="mailstack-e2e"):
            created = json.loads(stack.cli("backup", "create", "--json", timeout=900).stdout)
            assert created["repository_created"] is True and created["bytes_new"] > 0
            listed = json.loads(stack.cli("backup", "list", "--json").stdout)
            assert [s["short_id"] for s in listed] == [created["snapshot"]]
    finally:
        secret.unlink()


def test_a_full_target_disk_is_named(
    stack: RunningStack, first_backup: dict[str, Any], tmp_path: Path
) -> None:
    small = tmp_path / "small-disk"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        with backup_settings(stack, target=str(small / "repo")):
            result = stack.cli("backup", "create", check=False, timeout=900)
        assert result.returncode == 1
        assert "is full (no space left on device)" in result.stderr, result.stderr
        states = {s["Service"]: s["State"] for s in _ps(stack)}
        assert states["dovecot"] == "running"
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_restoring_one_mailbox_needs_force_and_keeps_a_safety_snapshot(
    stack: RunningStack, filled: Filled, first_backup: dict[str, Any]
) -> None:
    address = list(filled.messages)[-1]
    with imaps(stack) as imap:
        imap.login(address, PASSWORD)
        imap.select('"Archive"')
        imap.store("1:*", "+FLAGS", "\\Deleted")
        imap.expunge()
    assert _digests(stack, address)["Archive"] == []
    refused = stack.cli(
        "backup", "restore", first_backup["snapshot"], "--only", address, check=False
    )
    assert refused.returncode == 2 and "--force" in refused.stderr
    before = json.loads(stack.cli("backup", "list", "--json").stdout)
    restored = json.loads(
        stack.cli(
            "backup", "restore", first_backup["snapshot"], "--only", address, "--force", "--json",
            timeout=900,
        ).stdout
    )  # fmt: skip
    assert _digests(stack, address) == filled.messages[address]  # the Archive is back
    after = json.loads(stack.cli("backup", "list", "--json").stdout)
    assert len(after) == len(before) + 1 and "safety" in after[-1]["tags"]
    assert restored["safety_snapshot"] == after[-1]["short_id"]


def _files(root: Path) -> dict[str, bytes]:
    """Every file under root (DKIM keys: dkim/ed25519/ too, when a module turned it on), by
    its path relative to root."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_disaster_recovery_rebuilds_the_stack_in_a_new_directory(
    stack: RunningStack,
    repository: Path,
    filled: Filled,
    first_backup: dict[str, Any],
    tmp_path: Path,
) -> None:
    # Webmail data (contacts, settings) lives in Roundcube's own database: it travels too.
    stack.compose(
        "exec", "-T", "--user", "postgres", "db", "psql", "--dbname=roundcube",
        "--command", "CREATE TABLE backup_marker AS SELECT 'kept' AS note",
    )  # fmt: skip
    # Whatever was delivered last is in the newest snapshot; take it now.
    stack.cli("backup", "create", timeout=900)
    expected = {address: _digests(stack, address) for address in filled.messages}
    password_copy = tmp_path / "stored-elsewhere"
    shutil.copy2(stack.root / "secrets" / "backup_password", password_copy)
    dkim_before = _files(stack.root / "dkim")
    edited = (stack.root / "config" / "dovecot" / "dovecot.conf").read_bytes()

    # The disaster: containers, every volume and the stack directory are gone.
    stack.compose("down", "--volumes", "--remove-orphans")
    lost = stack.root.with_name("stack-lost")
    stack.root.rename(lost)
    new_root = tmp_path / "rebuilt"
    rebuilt = RunningStack(new_root, new_root / "tls" / "ca.pem")
    try:
        started = time.monotonic()
        mailstack(
            "restore", "--from", str(repository), "--dir", str(new_root),
            "--password-file", str(password_copy),
        )  # fmt: skip
        restore_seconds = time.monotonic() - started
        rebuilt.cli("up", "--timeout", "600", timeout=900)
        print(f"\nrestore into a new directory: {restore_seconds:.1f}s (before `up`)")

        for address, folders in expected.items():
            assert _digests(rebuilt, address) == folders  # byte-identical, same password
        for address, folders in filled.messages.items():
            for folder, digests in folders.items():
                assert set(digests) <= set(expected[address][folder])
        assert (new_root / "config" / "dovecot" / "dovecot.conf").read_bytes() == edited
        assert _files(new_root / "dkim") == dkim_before
        marker = rebuilt.compose(
            "exec", "-T", "--user", "postgres", "db", "psql", "--dbname=roundcube",
            "--tuples-only", "--no-align", "--command", "SELECT note FROM backup_marker",
        )  # fmt: skip
        assert marker.stdout.strip() == b"kept"

        # Outbound mail is signed with the same key, and the signature verifies.
        address = next(iter(filled.messages))
        subject = f"e2e dkim after restore {uuid.uuid4().hex}"
        submit(rebuilt, address, PASSWORD, message(address, "someone@elsewhere.example", subject))
        raw = from_sink(rebuilt, subject)
        assert dkim.verify(raw, dnsfunc=resolver_txt(rebuilt))

        # The new host carries on with the same repository; retention from mailstack.yaml
        # (keep_daily 7, …) keeps one snapshot of today, the newest.
        listed = json.loads(rebuilt.cli("backup", "list", "--json").stdout)
        pruned = json.loads(rebuilt.cli("backup", "prune", "--json", timeout=900).stdout)
        assert pruned["kept"] == 1 and len(pruned["removed"]) == len(listed) - 1
        remaining = json.loads(rebuilt.cli("backup", "list", "--json").stdout)
        assert [s["id"] for s in remaining] == [listed[-1]["id"]]
    finally:
        # The rebuilt stack is the session's project on the recovered volumes: hand them back
        # to the session's stack directory, so the tests after this one find it running.
        rebuilt.compose("down", "--remove-orphans", check=False)
        lost.rename(stack.root)
        stack.cli("up", "--timeout", "600", timeout=900)
