"""Mail to the postmaster through the stack itself: how the host tells a person (the daily
security run's outcome, a timer that failed). Sent as the probe mailbox over submission, so
it takes the path every user's mail takes and lands in an ordinary mailbox."""

from __future__ import annotations

from mailstack.errors import MailstackError
from mailstack.runtime import probe
from mailstack.stack.stackdir import Stack


def postmaster(stack: Stack) -> str:
    return f"postmaster@{stack.config.domain}"


def send_to_postmaster(stack: Stack, subject: str, body: str) -> None:
    """Mail the postmaster of the first domain; a MailstackError says why it could not."""
    address, password = probe.ensure_probe_account(stack.dir.root, stack.config, stack.compose)
    probe.send(
        stack.config,
        probe.ca_file(stack.dir.root, stack.config),
        address,
        password,
        to=postmaster(stack),
        subject=subject,
        body=body,
    )


def mail_postmaster(stack: Stack, subject: str, body: str) -> bool:
    """Mail the postmaster; False, and no exception, when the stack cannot take it (down, or
    no such mailbox: the caller records that it was not mailed)."""
    try:
        send_to_postmaster(stack, subject, body)
    except MailstackError:
        return False
    return True
