"""Measure `mailstack update`: how long port 25 goes without a banner, total time, mail lost.

Usage (as root, on a host prepared by scripts/setup-host.sh, with no other stack using
the ports 38xx or the subnets 172.29.101-102):
    .venv/bin/python bench/update.py

A sandbox stack is started from this checkout. Two releases are made from copies of it:
  A (0.1.1): only an Rspamd template changes, so only rspamd is recreated;
  B (0.1.2): the postfix image changes as well, so postfix is recreated too.
During each update a probe opens an SMTP connection to port 25 every 100 ms and waits up
to 1 s for the 220 banner, and an outside sender delivers a message every 200 ms, retrying
on 4xx and connection errors as an MTA would. Prints one figure per line.
"""

from __future__ import annotations

import email.utils
import imaplib
import itertools
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.sidestack import copy_checkout  # noqa: E402

PROJECT = "mailstack-bench-update"
PORTS = {
    "smtp": 3825,
    "submission": 3887,
    "submissions": 3865,
    "imap": 3843,
    "imaps": 3893,
    "http": 3880,
    "https": 3844,
    "managesieve": 3890,
}
DOMAIN = "example.test"
PASSWORD = "Correct-horse-42-battery"  # noqa: S105  # a bench account
CURRENT = "0.1.0"


def cli(tree: Path, *args: str, stdin: str | None = None) -> float:
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "mailstack", *args],
        cwd=tree,
        input=stdin,
        text=True,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def release(base: Path, version: str, *, postfix_image: bool) -> Path:
    """A copy of this checkout at `version`: an Rspamd template change, maybe a new postfix image."""
    tree = base / version
    copy_checkout(tree)
    init = tree / "mailstack" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{CURRENT}"', f'"{version}"'))
    options = tree / "templates" / "config" / "rspamd" / "options.inc"
    options.write_text(options.read_text() + f"# release {version}\n")
    if postfix_image:
        with (tree / "compose" / "postfix" / "Dockerfile").open("a") as dockerfile:
            dockerfile.write(f'\nLABEL org.mailstack.bench-release="{version}"\n')
    return tree


@dataclass
class BannerProbe:
    """Connects to port 25 every 100 ms; records when a 220 banner was (not) seen."""

    stop: threading.Event = field(default_factory=threading.Event)
    seen: list[float] = field(default_factory=list)
    attempts: int = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.attempts += 1
            try:
                with socket.create_connection(("127.0.0.1", PORTS["smtp"]), timeout=1) as sock:
                    sock.settimeout(1)
                    if sock.recv(64).startswith(b"220"):
                        self.seen.append(time.monotonic())
            except OSError:
                pass
            time.sleep(0.1)

    def longest_gap(self, start: float, end: float) -> float:
        points = [start, *[t for t in self.seen if start <= t <= end], end]
        return max(b - a for a, b in itertools.pairwise(points))


@dataclass
class SteadySender:
    mailbox: str
    stop: threading.Event = field(default_factory=threading.Event)
    sent: list[str] = field(default_factory=list)
    retries: int = 0

    def run(self) -> None:
        while not self.stop.is_set():
            subject = f"bench {uuid.uuid4().hex}"
            while True:
                try:
                    self._send(subject)
                    break
                except (OSError, smtplib.SMTPException) as e:
                    if isinstance(e, smtplib.SMTPResponseException) and e.smtp_code >= 500:
                        raise
                    self.retries += 1
                    time.sleep(0.5)
            self.sent.append(subject)
            time.sleep(0.2)

    def _send(self, subject: str) -> None:
        message = (
            f"From: someone@sender.example\r\nTo: {self.mailbox}\r\nSubject: {subject}\r\n"
            f"Date: {email.utils.formatdate()}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@sender.example>\r\n\r\nbench\r\n"
        )
        with smtplib.SMTP("127.0.0.1", PORTS["smtp"], timeout=30) as smtp:
            smtp.ehlo("mx.sender.example")
            smtp.sendmail("someone@sender.example", [self.mailbox], message.encode())


def delivered(root: Path, mailbox: str) -> list[str]:
    context = ssl.create_default_context(cafile=str(root / "tls" / "ca.pem"))
    context.check_hostname = False
    with imaplib.IMAP4_SSL("127.0.0.1", PORTS["imaps"], ssl_context=context) as imap:
        imap.login(mailbox, PASSWORD)
        imap.select("INBOX", readonly=True)
        _, found = imap.search(None, "ALL")
        subjects = []
        for number in found[0].split():
            _, data = imap.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            entry = data[0]
            assert isinstance(entry, tuple)
            raw = entry[1]
            subjects.append(raw.decode().split(":", 1)[1].strip())
        return subjects


def measure(root: Path, tree: Path, name: str, mailbox: str) -> list[str]:
    probe, sender = BannerProbe(), SteadySender(mailbox)
    threads = [threading.Thread(target=t.run, daemon=True) for t in (probe, sender)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    started = time.monotonic()
    seconds = cli(tree, "update", "--dir", str(root))
    ended = time.monotonic()
    time.sleep(2)
    probe.stop.set()
    sender.stop.set()
    for thread in threads:
        thread.join(timeout=60)
    print(f"{name}: update took {seconds:.1f} s")
    print(
        f"{name}: longest time without a 220 banner on 25: {probe.longest_gap(started, ended):.1f} s"
    )
    print(f"{name}: sender handed over {len(sender.sent)} messages ({sender.retries} retries)")
    return sender.sent


def main() -> None:
    with tempfile.TemporaryDirectory() as temp:
        base = Path(temp)
        root = base / "stack"
        cli(REPO, "init", "--non-interactive", "--sandbox", "--bind", "127.0.0.1",
            "--hostname", f"mail.{DOMAIN}", "--domain", DOMAIN, "--dir", str(root))  # fmt: skip
        config = yaml.safe_load((root / "mailstack.yaml").read_text())
        config["project"] = PROJECT
        config["features"]["antivirus"] = False
        config["network"].update(
            frontend_subnet="172.29.101.0/24", backend_subnet="172.29.102.0/24", ports=PORTS
        )
        config["backup"]["target"] = str(base / "backups")
        config.setdefault("policy", {}).setdefault("rate_limits", {}).update(
            client_connections_per_minute=0, client_ip_burst=0
        )
        (root / "mailstack.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        cli(REPO, "render", "--dir", str(root))
        release_a = release(base, "0.1.1", postfix_image=False)
        release_b = release(base, "0.1.2", postfix_image=True)
        try:
            cli(REPO, "up", "--dir", str(root), "--timeout", "600")
            mailbox = f"bench@{DOMAIN}"
            cli(REPO, "mailbox", "add", mailbox, "--password-stdin", "--dir", str(root),
                stdin=PASSWORD + "\n")  # fmt: skip
            sent = measure(root, release_a, "A (rspamd config only)", mailbox)
            sent += measure(root, release_b, "B (new postfix image)", mailbox)
            deadline = time.monotonic() + 180
            while True:
                received = delivered(root, mailbox)
                missing = set(sent) - set(received)
                if not missing or time.monotonic() > deadline:
                    break
                time.sleep(2)
            duplicates = len(received) - len(set(received))
            print(f"messages lost: {len(missing)} of {len(sent)}; duplicated: {duplicates}")
        finally:
            subprocess.run(
                ["docker", "compose", "--project-name", PROJECT, "--project-directory", str(root),
                 "--file", str(root / "compose.yaml"), "down", "--volumes", "--remove-orphans"],
                check=False, capture_output=True,
            )  # fmt: skip
            subprocess.run(["docker", "volume", "rm", "--force", f"{PROJECT}-backup-cache"],
                           check=False, capture_output=True)  # fmt: skip


if __name__ == "__main__":
    main()
