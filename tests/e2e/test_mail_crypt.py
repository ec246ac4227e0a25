"""Encryption at rest: Dovecot's mail_crypt stores every message encrypted to the stack's keys."""

from __future__ import annotations

import email
import email.policy
import imaplib
import json
import smtplib
import stat
import subprocess
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.e2e.conftest import DOMAIN, PORTS, RunningStack

pytestmark = pytest.mark.e2e

# How every file written by mail_crypt starts (Dovecot's lib-dcrypt stream magic).
MAIL_CRYPT_MAGIC = b"CRYPTED\x03\x07"


def mail_volume(stack: RunningStack) -> Path:
    """The host directory behind Dovecot's /var/mail (the `mail` volume)."""
    container = stack.compose("ps", "--quiet", "dovecot").stdout.decode().strip()
    mounts = json.loads(
        subprocess.run(
            ["docker", "inspect", "--format", "{{json .Mounts}}", container],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    (source,) = [m["Source"] for m in mounts if m["Destination"] == "/var/mail"]
    return Path(source)


def fetch_raw(stack: RunningStack, address: str, password: str, subject: str) -> bytes:
    """The whole message with this subject from INBOX over IMAPS, as the server sends it."""
    deadline = time.monotonic() + 60
    while True:
        with imaplib.IMAP4_SSL(
            "127.0.0.1", PORTS["imaps"], ssl_context=stack.tls_context()
        ) as imap:
            imap.login(address, password)
            imap.select("INBOX", readonly=True)
            _, found = imap.search(None, "SUBJECT", f'"{subject}"')
            if found[0]:
                _, data = imap.fetch(found[0].split()[-1], "(BODY.PEEK[])")
                raw = data[0][1]
                assert isinstance(raw, bytes)
                return raw
        if time.monotonic() > deadline:
            raise AssertionError(f"no message {subject!r} for {address} after 60s")
        time.sleep(1)


def test_message_is_encrypted_on_the_volume_and_intact_over_imap(stack: RunningStack) -> None:
    address, password = stack.new_mailbox()
    marker = f"plaintext-marker-{uuid.uuid4().hex}"
    subject = f"e2e mail_crypt {uuid.uuid4().hex}"
    body = f"Kept encrypted at rest.\n{marker}\nZweite Zeile mit Ümlauten: äöü ß.\n"
    mail = EmailMessage()
    mail["From"] = address
    mail["To"] = address
    mail["Subject"] = subject
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@{DOMAIN}>"
    mail.set_content(body)
    with smtplib.SMTP("127.0.0.1", PORTS["submission"], timeout=30) as smtp:
        smtp.starttls(context=stack.tls_context())
        smtp.login(address, password)
        smtp.send_message(mail)

    raw = fetch_raw(stack, address, password, subject)
    received = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(received, EmailMessage)
    assert received["Subject"] == subject
    content = received.get_content()
    assert isinstance(content, str)
    assert content.replace("\r\n", "\n") == body

    local_part, domain = address.split("@")
    home = mail_volume(stack) / domain / local_part
    stored = [
        path
        for folder in ("new", "cur")
        for path in (home / "Maildir" / folder).glob("*")
        if path.is_file()
    ]
    assert len(stored) == 1, stored  # a new mailbox: this message is its only one
    on_disk = stored[0].read_bytes()
    assert on_disk.startswith(MAIL_CRYPT_MAGIC), on_disk[:32]
    assert marker.encode() not in on_disk
    assert subject.encode() not in on_disk
    # Nor anywhere else in the mailbox: Dovecot's indexes hold some headers, never the body.
    leaking = [
        path for path in home.rglob("*") if path.is_file() and marker.encode() in path.read_bytes()
    ]
    assert leaking == []


def test_mail_crypt_keys_are_stack_secrets_with_mode_0600(stack: RunningStack) -> None:
    for name in ("mail_crypt_private_key", "mail_crypt_public_key"):
        path = stack.root / "secrets" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    private = (stack.root / "secrets" / "mail_crypt_private_key").read_text()
    assert private.startswith("-----BEGIN PRIVATE KEY-----")
    # Handed to Dovecot as Compose file secrets, never through the environment or the config.
    environment = stack.compose("exec", "-T", "dovecot", "env").stdout.decode()
    assert "PRIVATE KEY" not in environment
    assert private.strip() not in "".join(
        path.read_text(errors="replace")
        for path in (stack.root / "config").rglob("*")
        if path.is_file()
    )
