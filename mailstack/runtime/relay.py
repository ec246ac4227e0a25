"""The relay host (relay.* in mailstack.yaml): what `up` needs before Postfix can use it, the
password's one door (`mailstack relay password`), and what the queue says about the relay."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mailstack.errors import MailstackError
from mailstack.runtime import mailqueue
from mailstack.runtime.mailqueue import QueuedMessage
from mailstack.stack.config import Config
from mailstack.stack.secrets import RELAY_PASSWORD, relay_password_present, write_relay_password
from mailstack.stack.stackdir import Stack

# How Postfix's SMTP client words a relay's refusal of its credentials in a delay reason.
_REFUSED_CREDENTIALS = "SASL authentication failed"


def require_ready(config: Config, root: Path) -> None:
    """Refuse to start a stack whose relay settings name a file that is not there."""
    relay = config.relay
    if relay.username is not None and not relay_password_present(root):
        raise MailstackError(
            f"relay.username is {relay.username!r} but secrets/{RELAY_PASSWORD} is missing "
            "or empty",
            hint="run `mailstack relay password` (it reads the password, never from argv)",
        )
    if relay.ca_file is not None and not Path(relay.ca_file).is_file():
        raise MailstackError(
            f"relay.ca_file: {relay.ca_file} is not a readable file",
            hint="name a PEM bundle of the CAs that sign the relay's certificate",
        )


def store_password(stack: Stack, password: str) -> None:
    """Store the relay password (secrets/relay_password, 0600); Postfix takes it at its next
    start (the caller restarts it when it runs)."""
    if stack.config.relay.username is None:
        raise MailstackError(
            "relay.username is not set in mailstack.yaml: a password would go unused",
            hint="set relay.host and relay.username first",
        )
    write_relay_password(stack.dir.root, password)


def refused_credentials(messages: Iterable[QueuedMessage]) -> int:
    """How many queued messages wait because the relay refused mailstack's credentials."""
    return sum(
        1
        for message in messages
        if any(_REFUSED_CREDENTIALS in r.delay_reason for r in message.recipients)
    )


def refusal_line(stack: Stack) -> str:
    """For `status`: one line when queued mail waits on the relay's refusal of the
    credentials; empty without a relay host, with Postfix down, or when none waits."""
    host = stack.config.relay.host
    if host is None or "postfix" not in stack.compose.running_services():
        return ""
    try:
        refused = refused_credentials(mailqueue.list_queue(stack.compose).messages)
    except MailstackError:
        return ""  # the queue's own trouble is `check health`'s to name
    if not refused:
        return ""
    return (
        f"relay: {host} refuses the credentials; {refused} message"
        f"{'' if refused == 1 else 's'} wait in the queue (`mailstack relay password`)"
    )
