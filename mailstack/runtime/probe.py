"""A real mail round trip through the running stack: submit on 587, read back on 993.

Used by `mailstack update` to prove the stack still moves mail after services were
recreated, and by `mailstack check health` (bounded to a few seconds). The probe account is
an ordinary mailbox (`mailstack-probe@<domain>`) whose password lives in
`secrets/probe_password`; its mail is deleted after each probe.
"""

from __future__ import annotations

import email.utils
import imaplib
import secrets
import smtplib
import ssl
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from mailstack.accounts import directory, passwords
from mailstack.adapters.psql import Executor
from mailstack.errors import MailstackError
from mailstack.stack.config import Config
from mailstack.stack.stackdir import Stack, atomic_write

PROBE_LOCAL_PART = "mailstack-probe"
PROBE_SECRET = "probe_password"  # noqa: S105  # the name of the secret file
_PROBE_QUOTA = 10 * 1024 * 1024
RETRY_SECONDS = 3
POLL_SECONDS = 0.5  # between two looks into the probe mailbox
SOCKET_SECONDS = 30  # one SMTP or IMAP connection at most (less when the deadline is nearer)


@dataclass(frozen=True)
class ProbeResult:
    address: str
    seconds: float

    def __str__(self) -> str:
        return f"mail round trip (587 -> 993) as {self.address}: {self.seconds:.1f} s"


def probe_address(config: Config) -> str:
    return f"{PROBE_LOCAL_PART}@{config.domain}"


def ca_file(root: Path, config: Config) -> Path | None:
    """The CA the probe verifies the stack's certificate with: the stack's own (self-signed
    mode), else the system's roots."""
    return root / "tls" / "ca.pem" if config.tls.mode == "selfsigned" else None


class LoginRefused(MailstackError):
    """The probe mailbox's password was refused (535): the mailbox is gone or re-keyed."""


def stack_round_trip(
    stack: Stack, timeout: float = 90, executor: Executor | None = None
) -> ProbeResult:
    """One round trip within `timeout` seconds with the stored password; the probe mailbox is
    made or re-keyed (through `executor`, default the stack's Compose) only when there is no
    stored password or it is refused: two database calls and a hash saved on every check."""
    root, config = stack.dir.root, stack.config
    started = time.monotonic()
    secret = root / "secrets" / PROBE_SECRET
    if secret.is_file():
        try:
            password = secret.read_text().strip()
            return round_trip(
                config, ca_file(root, config), probe_address(config), password, timeout
            )
        except LoginRefused:
            pass
    address, password = ensure_probe_account(root, config, executor or stack.compose)
    left = max(1.0, timeout - (time.monotonic() - started))
    return round_trip(config, ca_file(root, config), address, password, timeout=left)


def ensure_probe_account(root: Path, config: Config, compose: Executor) -> tuple[str, str]:
    """The probe mailbox and its password, made on first use (secret file 0600)."""
    address = probe_address(config)
    secret = root / "secrets" / PROBE_SECRET
    if secret.exists():
        password = secret.read_text().strip()
    else:
        password = secrets.token_urlsafe(24)
        atomic_write(secret, password.encode(), 0o600)
    known = {mailbox.address for mailbox in directory.list_mailboxes(compose, config.domain)}
    hashed = passwords.hash_password(password)
    if address in known:
        directory.set_mailbox_password(compose, address, hashed)
    else:
        directory.add_mailbox(compose, address, hashed, _PROBE_QUOTA)
    return address, password


def round_trip(
    config: Config, ca_file: Path | None, address: str, password: str, timeout: float = 90
) -> ProbeResult:
    """Send one message to the probe mailbox over submission and wait for it over IMAPS; a
    MailstackError once `timeout` seconds have passed (every connection is bounded by it)."""
    host = _connect_address(config.network.bind_ipv4)
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    # We reach our own published port by address, not by name: the chain is still verified.
    context.check_hostname = False
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    started = time.monotonic()
    token = secrets.token_hex(8)
    message = EmailMessage()
    message["From"] = address
    message["To"] = address
    message["Subject"] = f"mailstack probe {token}"
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = email.utils.make_msgid(domain=config.domain)
    message.set_content("A round trip made by mailstack to check the stack; deleted at once.\n")
    deadline = started + timeout
    try:
        _submit(config, host, context, address, password, message, deadline=deadline)
        while True:
            if _fetch_and_delete(config, host, context, address, password, token, deadline):
                return ProbeResult(address, time.monotonic() - started)
            if time.monotonic() > deadline:
                raise MailstackError(
                    f"the probe message to {address} did not arrive within {timeout:.0f} s"
                )
            time.sleep(min(POLL_SECONDS, _left(deadline)))
    except smtplib.SMTPAuthenticationError as e:
        raise LoginRefused(f"the probe mailbox {address} could not log in: {e}") from None
    except (OSError, smtplib.SMTPException, imaplib.IMAP4.error) as e:
        raise MailstackError(f"the mail round trip as {address} failed: {e}") from None


def _submit(
    config: Config,
    host: str,
    context: ssl.SSLContext,
    address: str,
    password: str,
    message: EmailMessage,
    deadline: float,
) -> None:
    """Submit as a mail client would, retrying a temporary (4xx) refusal or a dropped
    connection until the deadline: a daemon that has just started may defer for a moment
    (Postfix marks a database it could not reach as down for a while), and real senders
    retry that. A permanent (5xx) refusal fails at once."""
    while True:
        try:
            with smtplib.SMTP(
                host, config.network.ports.submission, timeout=_socket_seconds(deadline)
            ) as smtp:
                smtp.ehlo(config.hostname)
                smtp.starttls(context=context)
                smtp.login(address, password)
                smtp.send_message(message)
            return
        except (OSError, smtplib.SMTPException) as e:
            if not is_temporary(e) or time.monotonic() + 0.1 > deadline:
                raise
            time.sleep(min(RETRY_SECONDS, _left(deadline)))


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _socket_seconds(deadline: float) -> float:
    """A connection's timeout: SOCKET_SECONDS, or what is left before the deadline."""
    return min(SOCKET_SECONDS, max(0.5, _left(deadline)))


def send(
    config: Config,
    ca_file: Path | None,
    address: str,
    password: str,
    *,
    to: str,
    subject: str,
    body: str,
    timeout: float = 90,
) -> None:
    """A notice from mailstack, submitted on 587 as the probe mailbox (signed like any mail
    of the domain); temporary refusals are retried until the timeout."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.check_hostname = False  # our own published port, by address; the chain is verified
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    message = EmailMessage()
    message["From"] = f"mailstack <{address}>"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=False)
    message["Message-ID"] = email.utils.make_msgid(domain=config.domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to it
    message.set_content(body)
    host = _connect_address(config.network.bind_ipv4)
    try:
        _submit(config, host, context, address, password, message, time.monotonic() + timeout)
    except (OSError, smtplib.SMTPException) as e:
        raise MailstackError(f"the notice to {to} could not be submitted: {e}") from None


def is_temporary(error: Exception) -> bool:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in error.recipients.values())
    if isinstance(error, smtplib.SMTPResponseException):
        return 400 <= error.smtp_code < 500
    return isinstance(error, (OSError, smtplib.SMTPServerDisconnected))


def _fetch_and_delete(
    config: Config,
    host: str,
    context: ssl.SSLContext,
    address: str,
    password: str,
    token: str,
    deadline: float,
) -> bool:
    with imaplib.IMAP4_SSL(
        host, config.network.ports.imaps, ssl_context=context, timeout=_socket_seconds(deadline)
    ) as imap:
        imap.login(address, password)
        imap.select("INBOX")
        _, found = imap.search(None, "SUBJECT", f'"mailstack probe {token}"')
        numbers = found[0].split() if found and found[0] else []
        for number in numbers:
            imap.store(number.decode(), "+FLAGS", "\\Deleted")
        if numbers:
            imap.expunge()
        return bool(numbers)


def _connect_address(bind: str) -> str:
    return "127.0.0.1" if bind in ("0.0.0.0", "") else bind  # noqa: S104  # "all addresses"
