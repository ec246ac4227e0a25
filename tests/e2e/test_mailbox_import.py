"""`mailstack mailbox import` (issue 19): a mailbox moves from another server. The other
server is a second Dovecot (the stack's own image, a configuration of this test's: a static
password, Maildir, IMAPS alone with a certificate from this test's CA) on the stack's
frontend network as oldmail.legacy.test. It holds folders, nested ones among them, and
messages with flags; the import copies them over verified TLS, a second run copies only
what is new, and wrong input or a wrong password is one line that changes nothing.
"""

from __future__ import annotations

import imaplib
import json
import re
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import PORTS, PROJECT, SLOT, RunningStack
from tests.e2e.mail import message
from tests.e2e.testca import server_certificate

pytestmark = pytest.mark.e2e

OLD_NAME = "oldmail.legacy.test"
OLD_USER = "old@legacy.test"
OLD_PASSWORD = "Old-server-password-42"  # static passdb args: no spaces
OLD_PORT = 10993 + SLOT  # published on loopback for seeding only
CONTAINER = f"{PROJECT}-oldmail"

OLD_CONFIG = f"""\
protocols = imap
listen = *
ssl = required
ssl_min_protocol = TLSv1.2
ssl_cert = </etc/oldmail/cert.pem
ssl_key = </etc/oldmail/key.pem
auth_mechanisms = plain
passdb {{
  driver = static
  args = password={OLD_PASSWORD}
}}
userdb {{
  driver = static
  args = uid=vmail gid=vmail home=/srv/oldmail/%u
}}
mail_location = maildir:~/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
log_path = /dev/stderr
"""

# folder -> (subject, flags) of the messages the old server holds.
SEEDED: dict[str, list[tuple[str, str]]] = {
    "INBOX": [("old inbox 1", r"(\Seen)"), ("old inbox 2", r"(\Flagged)"), ("old inbox 3", "")],
    "Archive": [("old archive 1", r"(\Seen \Answered)"), ("old archive 2", r"(\Seen)")],
    "Archive/2019": [("old 2019", r"(\Seen)")],
}


@dataclass
class OldServer:
    ca: Path

    def imap(self) -> imaplib.IMAP4_SSL:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.check_hostname = False  # loopback; the stack checks the name, not this seeder
        imap = imaplib.IMAP4_SSL("127.0.0.1", OLD_PORT, ssl_context=context)
        imap.login(OLD_USER, OLD_PASSWORD)
        return imap

    def append(self, folder: str, subject: str, flags: str) -> None:
        imap = self.imap()
        try:
            imap.create(folder)  # NO when it exists: fine
            mail = message(OLD_USER, OLD_USER, subject).as_bytes()
            status, _ = imap.append(folder, flags or None, None, mail)
            assert status == "OK", (folder, subject)
        finally:
            imap.logout()


@pytest.fixture(scope="module")
def old_server(
    stack: RunningStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OldServer]:
    directory = tmp_path_factory.mktemp("oldmail")
    ca, _, _ = server_certificate(directory, OLD_NAME)
    (directory / "dovecot.conf").write_text(OLD_CONFIG)
    subprocess.run(
        ["docker", "rm", "--force", "--volumes", CONTAINER], capture_output=True, check=False
    )
    subprocess.run(
        [
            "docker", "run", "--detach", "--name", CONTAINER,
            "--network", f"{PROJECT}_frontend", "--network-alias", OLD_NAME,
            "--publish", f"127.0.0.1:{OLD_PORT}:993",
            "--tmpfs", "/srv/oldmail:uid=5000,gid=5000,mode=0700", "--tmpfs", "/run:mode=0755",
            "--volume", f"{directory}:/etc/oldmail:ro",
            "--entrypoint", "dovecot", stack.image("dovecot"), "-F", "-c", "/etc/oldmail/dovecot.conf",
        ],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        server = OldServer(ca)
        deadline = time.monotonic() + 60
        while True:
            try:
                server.imap().logout()
                break
            except (OSError, imaplib.IMAP4.error):
                assert time.monotonic() < deadline, _logs()
                time.sleep(0.5)
        for folder, messages in SEEDED.items():
            for subject, flags in messages:
                server.append(folder, subject, flags)
        yield server
    finally:
        subprocess.run(
            ["docker", "rm", "--force", "--volumes", CONTAINER], capture_output=True, check=False
        )


def _logs() -> str:
    done = subprocess.run(
        ["docker", "logs", CONTAINER], capture_output=True, text=True, check=False
    )
    return done.stdout + done.stderr


def import_(
    stack: RunningStack, address: str, *extra: str, password: str = OLD_PASSWORD
) -> subprocess.CompletedProcess[str]:
    return stack.cli(
        "mailbox", "import", address, "--from", f"imaps://{OLD_NAME}", "--user", OLD_USER,
        "--password-stdin", *extra, stdin=password + "\n", check=False, timeout=600,
    )  # fmt: skip


def held(stack: RunningStack, address: str, password: str) -> dict[str, dict[str, set[str]]]:
    """folder -> subject -> flags, as the stack's IMAP shows the mailbox."""
    found: dict[str, dict[str, set[str]]] = {}
    with imaplib.IMAP4_SSL("127.0.0.1", PORTS["imaps"], ssl_context=stack.tls_context()) as imap:
        imap.login(address, password)
        _, listed = imap.list()
        lines = [line for line in listed if isinstance(line, bytes)]
        names = [re.sub(r'^\(.*?\) "." ', "", line.decode()).strip('"') for line in lines]
        for name in names:
            status, count = imap.select(f'"{name}"', readonly=True)
            if status != "OK":
                continue
            if count[0] == b"0":
                found[name] = {}
                continue
            _, data = imap.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            folder: dict[str, set[str]] = {}
            for part in data:
                if isinstance(part, tuple):
                    flags = set(re.findall(r"\\\w+", part[0].decode()))
                    subject = part[1].decode().split(":", 1)[1].strip()
                    folder[subject] = flags - {"\\Recent"}
            found[name] = folder
    return found


def test_a_dry_run_counts_the_source_and_copies_nothing(
    stack: RunningStack, old_server: OldServer
) -> None:
    address, password = stack.new_mailbox()
    result = import_(stack, address, "--ca-file", str(old_server.ca), "--dry-run")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "would import from old@legacy.test at imaps://oldmail.legacy.test:993" in result.stdout
    assert "Archive/2019: 1 at the source, 0 here" in result.stdout, result.stdout
    assert "3 folders, 6 messages at the source; nothing was copied" in result.stdout
    assert all(not subjects for subjects in held(stack, address, password).values())


def test_b_folders_mail_and_flags_arrive_and_a_second_run_copies_only_the_new(
    stack: RunningStack, old_server: OldServer
) -> None:
    address, password = stack.new_mailbox()
    started = time.monotonic()
    result = import_(stack, address, "--ca-file", str(old_server.ca))
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 copied now into" in result.stdout, result.stdout
    print(f"\nimport of 6 messages in 3 folders: {seconds:.1f} s")
    found = held(stack, address, password)
    for folder, messages in SEEDED.items():
        for subject, flags in messages:
            assert subject in found[folder], (folder, found)
            assert found[folder][subject] == set(re.findall(r"\\\w+", flags)), (folder, found)

    old_server.append("Archive", "old archive 3, after the first run", "")
    with imaplib.IMAP4_SSL("127.0.0.1", PORTS["imaps"], ssl_context=stack.tls_context()) as imap:
        imap.login(address, password)  # mail that reached the new server meanwhile
        local = message(address, address, "arrived here meanwhile").as_bytes()
        assert imap.append("INBOX", None, None, local)[0] == "OK"
    again = import_(stack, address, "--ca-file", str(old_server.ca), "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    report = json.loads(again.stdout)
    assert report["dry_run"] is False
    after = {f["name"]: f["messages"] for f in report["here_after"]}
    assert after["Archive"] == 3 and after["INBOX"] == 4, after  # one new, no duplicates
    now = held(stack, address, password)
    assert "old archive 3, after the first run" in now["Archive"]
    assert "arrived here meanwhile" in now["INBOX"]  # mail already here stays


def test_c_a_wrong_password_or_an_unverified_certificate_is_one_line(
    stack: RunningStack, old_server: OldServer
) -> None:
    address, _ = stack.new_mailbox()
    wrong = import_(stack, address, "--ca-file", str(old_server.ca), password="not it")
    said = wrong.stdout + wrong.stderr
    assert wrong.returncode == 1 and "the import stopped:" in said, said
    assert "uthenticat" in said and "Traceback" not in said, said
    # Without the test CA the source's certificate is not trusted: refused, not copied.
    untrusted = import_(stack, address)
    said = untrusted.stdout + untrusted.stderr
    assert untrusted.returncode == 1 and "the import stopped:" in said, said
    logs = stack.compose("logs", "--no-color", "dovecot", check=False).stdout.decode()
    assert OLD_PASSWORD not in logs and "not it" not in logs
    left = stack.compose("exec", "-T", "dovecot", "sh", "-c", "ls /run/mailstack")
    assert "import-" not in left.stdout.decode()  # the settings file is gone


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--from", "pop3://oldmail.legacy.test", "--user", OLD_USER], "--from"),
        (["--from", "imaps://user:pw@oldmail.legacy.test", "--user", OLD_USER], "--from"),
        (["--from", "imaps://bad host", "--user", OLD_USER], "--from"),
        (["--from", "imaps://oldmail.legacy.test", "--user", "two\nlines"], "--user"),
    ],
)
def test_d_bad_input_is_one_line_naming_the_option(
    stack: RunningStack, args: list[str], named: str
) -> None:
    result = stack.cli(
        "mailbox", "import", "someone@example.test", *args, "--password-stdin",
        stdin="x\n", check=False,
    )  # fmt: skip
    said = result.stdout + result.stderr
    assert result.returncode == 2 and named in said and "Traceback" not in said, said


def test_e_an_unknown_mailbox_here_is_named(stack: RunningStack, old_server: OldServer) -> None:
    result = import_(stack, "nobody-here@example.test", "--ca-file", str(old_server.ca))
    said = result.stdout + result.stderr
    assert result.returncode == 1 and "is not a mailbox here" in said, said
