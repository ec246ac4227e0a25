"""Talking to the running stack as mail clients do: SMTP in, IMAP out."""

from __future__ import annotations

import email
import email.policy
import email.utils
import imaplib
import smtplib
import time
import uuid
from email.message import EmailMessage

from tests.e2e.conftest import DOMAIN, PORTS, RunningStack

OUTSIDE_SENDER = "someone@sender.example"


def message(sender: str, recipient: str, subject: str, body: str = "Hello.\n") -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = recipient
    mail["Subject"] = subject
    # Well formed, as real mail is: without a Date, and with a Message-ID naming the
    # recipient's domain, Rspamd scores outside mail as spam and Sieve files it into Junk.
    mail["Date"] = email.utils.formatdate()
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@{sender.rpartition('@')[2] or DOMAIN}>"
    mail.set_content(body)
    return mail


def unique_subject(what: str) -> str:
    return f"e2e {what} {uuid.uuid4().hex}"


def send_inbound(
    recipients: list[str], subject: str, body: str = "inbound body\n"
) -> dict[str, tuple[int, bytes]]:
    """Send from the outside world to port 25 (no authentication); return refused recipients.

    Raises smtplib.SMTPRecipientsRefused when every recipient is refused.
    """
    mail = message(OUTSIDE_SENDER, ", ".join(recipients), subject, body)
    with smtplib.SMTP("127.0.0.1", PORTS["smtp"], timeout=30) as smtp:
        smtp.ehlo("mx.sender.example")
        return smtp.sendmail(OUTSIDE_SENDER, recipients, mail.as_bytes())


def submit(stack: RunningStack, login: str, password: str, mail: EmailMessage) -> None:
    """Send like a mail client: port 587, STARTTLS, AUTH."""
    with smtplib.SMTP("127.0.0.1", PORTS["submission"], timeout=60) as smtp:
        smtp.ehlo("client.example.test")
        smtp.starttls(context=stack.tls_context())
        smtp.ehlo("client.example.test")
        smtp.login(login, password)
        smtp.send_message(mail)


def imaps(stack: RunningStack) -> imaplib.IMAP4_SSL:
    return imaplib.IMAP4_SSL("127.0.0.1", PORTS["imaps"], ssl_context=stack.tls_context())


def can_log_in(stack: RunningStack, address: str, password: str) -> bool:
    """Whether IMAPS accepts this login."""
    with imaps(stack) as imap:
        try:
            imap.login(address, password)
        except imaplib.IMAP4.error:
            return False
        return True


def inbox_subjects(
    stack: RunningStack, address: str, password: str, folder: str = "INBOX"
) -> list[str]:
    """The subjects of every message in INBOX (or another folder) right now."""
    with imaps(stack) as imap:
        imap.login(address, password)
        imap.select(folder, readonly=True)
        _, found = imap.search(None, "ALL")
        subjects = []
        for number in found[0].split():
            _, data = imap.fetch(number, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            raw = data[0][1]
            assert isinstance(raw, bytes)
            parsed = email.message_from_bytes(raw, policy=email.policy.default)
            subjects.append(str(parsed["Subject"] or ""))
        return subjects


def delivered(stack: RunningStack, address: str, password: str, tag: str) -> set[str]:
    """Subjects with this tag in the mailbox, INBOX or Junk (filed, not lost)."""
    found = inbox_subjects(stack, address, password)
    found += inbox_subjects(stack, address, password, folder="Junk")
    return {subject for subject in found if subject.startswith(tag)}


def fetch_by_subject(
    stack: RunningStack, address: str, password: str, subject: str, timeout: float = 60
) -> EmailMessage:
    """Wait until a message with this subject is in INBOX (over IMAPS) and return it."""
    deadline = time.monotonic() + timeout
    while True:
        with imaps(stack) as imap:
            imap.login(address, password)
            imap.select("INBOX", readonly=True)
            _, found = imap.search(None, "SUBJECT", f'"{subject}"')
            ids = found[0].split()
            if ids:
                _, data = imap.fetch(ids[-1], "(RFC822)")
                raw = data[0][1]
                assert isinstance(raw, bytes)
                parsed = email.message_from_bytes(raw, policy=email.policy.default)
                assert isinstance(parsed, EmailMessage)
                return parsed
        if time.monotonic() > deadline:
            raise AssertionError(f"no message {subject!r} for {address} after {timeout}s")
        time.sleep(1)


def wait_for_sink(stack: RunningStack, text: str, timeout: float = 60) -> None:
    """Wait until a message containing text reached the outbound sink."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = stack.compose(
            "exec", "-T", "sink", "grep", "-rl", text, "/var/mail/sink", check=False
        )
        if found.returncode == 0:
            return
        time.sleep(1)
    raise AssertionError(f"no message with {text!r} reached the sink after {timeout}s")


POSTMASTER_PASSWORD = "Postmaster-reads-42-alerts"  # a test account


def postmaster_mailbox(stack: RunningStack) -> tuple[str, str]:
    """postmaster@ the first domain as a mailbox with a known password, whichever module
    (alerts, aggregate reports) asks first: made if missing, its password set if not."""
    address = f"postmaster@{DOMAIN}"
    made = stack.cli("mailbox", "add", address, "--password-stdin",
                     stdin=POSTMASTER_PASSWORD + "\n", check=False)  # fmt: skip
    if made.returncode != 0:
        stack.cli("mailbox", "passwd", address, "--password-stdin",
                  stdin=POSTMASTER_PASSWORD + "\n")  # fmt: skip
    return address, POSTMASTER_PASSWORD
