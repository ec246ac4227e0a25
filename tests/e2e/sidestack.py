"""A stack of its own beside the session's (update and security tests, benchmarks): its own
project name, ports and subnets, driven as an operator and an outside MTA would."""

from __future__ import annotations

import contextlib
import email
import email.message
import email.policy
import email.utils
import imaplib
import shutil
import smtplib
import ssl
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "Correct-horse-42-battery"  # the test mailboxes' password


REPO = Path(__file__).resolve().parents[2]
# What a release tree leaves out, at the checkout's top only (mailstack/stack/ is a package).
_NOT_RELEASED = {".git", ".venv", "stack", "tests"}


def copy_checkout(destination: Path) -> Path:
    """A copy of this checkout as a release would ship it, to change and run from."""

    def left_out(directory: str, names: list[str]) -> set[str]:
        top = Path(directory).resolve() == REPO
        return {n for n in names if n == "__pycache__" or n.endswith(".pyc")} | (
            _NOT_RELEASED & set(names) if top else set()
        )

    shutil.copytree(REPO, destination, ignore=left_out)
    return destination


@dataclass
class SideStack:
    root: Path
    project: str
    ports: Mapping[str, int]
    mailbox: str = ""  # where `send` delivers

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "compose", "--project-name", self.project, "--project-directory",
             str(self.root), "--file", str(self.root / "compose.yaml"), *args],
            capture_output=True, text=True, timeout=300, check=check,
        )  # fmt: skip

    def started_at(self) -> dict[str, str]:
        """{container name: start time} of every container of the stack."""
        ids = self.compose("ps", "--quiet").stdout.split()
        out = subprocess.run(
            ["docker", "inspect", "--format", "{{.Name}} {{.State.StartedAt}}", *ids],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return dict(line.split(" ", 1) for line in out.splitlines())

    def image_of(self, service: str) -> str:
        container = self.compose("ps", "--quiet", service).stdout.strip()
        return subprocess.run(
            ["docker", "inspect", "--format", "{{.Config.Image}}", container],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    def tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.root / "tls" / "ca.pem"))
        context.check_hostname = False  # 127.0.0.1; the chain is still verified
        return context

    def send(self, subject: str) -> None:
        """One message from an outside MTA to `mailbox`, on port 25."""
        message = (
            f"From: someone@sender.example\r\nTo: {self.mailbox}\r\nSubject: {subject}\r\n"
            f"Date: {email.utils.formatdate()}\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@sender.example>\r\n\r\nsent to a side stack\r\n"
        )
        smtp = smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=30)
        try:
            smtp.ehlo("mx.sender.example")
            smtp.sendmail("someone@sender.example", [self.mailbox], message.encode())
        finally:
            # Accepted at the end of DATA is handed over, as an MTA counts it: a Postfix
            # stopping meanwhile may answer QUIT with 421, which must not send it again.
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.quit()
            smtp.close()

    def messages(self, address: str = "") -> list[email.message.EmailMessage]:
        with imaplib.IMAP4_SSL("127.0.0.1", self.ports["imaps"], ssl_context=self.tls()) as imap:
            imap.login(address or self.mailbox, PASSWORD)
            imap.select("INBOX", readonly=True)
            _, found = imap.search(None, "ALL")
            messages = []
            for number in found[0].split():
                _, data = imap.fetch(number, "(BODY.PEEK[])")
                entry = data[0]
                assert isinstance(entry, tuple)
                raw = entry[1]
                parsed = email.message_from_bytes(raw, policy=email.policy.default)
                assert isinstance(parsed, email.message.EmailMessage)
                messages.append(parsed)
            return messages

    def subjects(self, address: str = "") -> list[str]:
        return [str(message["Subject"]) for message in self.messages(address)]

    def wait_for(self, subjects: list[str], timeout: float = 180) -> list[str]:
        """Every subject delivered to `mailbox` (waiting up to timeout); all subjects seen."""
        deadline = time.monotonic() + timeout
        while True:
            received = self.subjects()
            missing = set(subjects) - set(received)
            if not missing:
                return received
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(missing)} message(s) never arrived: {sorted(missing)[:5]}"
                )
            time.sleep(2)
