"""The relay hosts (relay.* in mailstack.yaml): what `up` needs before Postfix can use them,
the passwords' one door (`mailstack relay password [--domain D]`), and what the queue says
about the relays."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mailstack.errors import MailstackError
from mailstack.runtime import mailqueue
from mailstack.runtime.mailqueue import QueuedMessage
from mailstack.stack.config import Config
from mailstack.stack.config_sections import Relay
from mailstack.stack.config_values import normalize_domain
from mailstack.stack.secrets import (
    relay_password_name,
    relay_password_present,
    write_relay_password,
)
from mailstack.stack.stackdir import Stack

# How Postfix's SMTP client words a relay's refusal of its credentials in a delay reason.
_REFUSED_CREDENTIALS = "SASL authentication failed"


def require_ready(config: Config, root: Path) -> None:
    """Refuse to start a stack whose relay settings name a file that is not there."""
    relay = config.relay
    if relay.username is not None and not relay_password_present(root):
        raise MailstackError(
            f"relay.username is {relay.username!r} but secrets/{relay_password_name()} is "
            "missing or empty",
            hint="run `mailstack relay password` (it reads the password, never from argv)",
        )
    for entry in relay.by_sender_domain:
        if entry.username is not None and not relay_password_present(root, entry.domain):
            raise MailstackError(
                f"relay.by_sender_domain: {entry.domain}'s username is {entry.username!r} but "
                f"secrets/{relay_password_name(entry.domain)} is missing or empty",
                hint=f"run `mailstack relay password --domain {entry.domain}`",
            )
    if relay.ca_file is not None and not Path(relay.ca_file).is_file():
        raise MailstackError(
            f"relay.ca_file: {relay.ca_file} is not a readable file",
            hint="name a PEM bundle of the CAs that sign the relay's certificate",
        )


def password_target(config: Config, domain: str | None) -> str | None:
    """Whose password `relay password` would store: None for relay.username, else the
    by_sender_domain entry's domain (normalised); refused when no user would take it."""
    relay = config.relay
    if domain is None:
        if relay.username is None:
            raise MailstackError(
                "relay.username is not set in mailstack.yaml: a password would go unused",
                hint="set relay.host and relay.username first",
            )
        return None
    try:
        domain = normalize_domain(domain)
    except ValueError as e:
        raise MailstackError(f"--domain: {domain!r} {e}") from None
    entry = relay.sender_relay(domain)
    if entry is None or entry.username is None:
        raise MailstackError(
            f"relay.by_sender_domain has no entry for {domain} with a username: a password "
            "would go unused",
            hint="add {domain, host, username} to relay.by_sender_domain first",
        )
    return domain


def store_password(stack: Stack, password: str, domain: str | None = None) -> str:
    """Store relay.username's password (secrets/relay_password), or with a domain that of its
    relay.by_sender_domain entry (secrets/relay_password.<domain>), 0600; Postfix takes it at
    its next start (the caller restarts it when it runs). Returns the secret's name."""
    target = password_target(stack.config, domain)
    write_relay_password(stack.dir.root, password, target)
    return relay_password_name(target)


def relay_label(host: str, domain: str | None) -> str:
    """A relay as health and status name it: its host, and the sender domain it serves."""
    return host + (f" (mail from {domain})" if domain else "")


@dataclass(frozen=True)
class Refusal:
    """Queued mail held back because one relay refuses mailstack's credentials."""

    host: str
    domain: str | None  # the sender domain whose own relay it is; None: relay.host
    messages: int

    def __str__(self) -> str:
        return relay_label(self.host, self.domain)

    @property
    def waiting(self) -> str:
        """How much mail it holds back, as health and status say it."""
        return f"{self.messages} message{'' if self.messages == 1 else 's'} wait in the queue"

    @property
    def fix(self) -> str:
        """The command that stores this relay's password."""
        option = f" --domain {self.domain}" if self.domain else ""
        return f"`mailstack relay password{option}`"


def refusals(relay: Relay, messages: Iterable[QueuedMessage]) -> tuple[Refusal, ...]:
    """Which relays refuse the credentials and how many queued messages wait on each. A
    message is the relay's that Postfix chose for it: its envelope sender's domain's own
    (relay.by_sender_domain), else relay.host's."""
    counts: dict[str | None, int] = {}
    for message in messages:
        if any(_REFUSED_CREDENTIALS in r.delay_reason for r in message.recipients):
            entry = relay.sender_relay(message.sender.rpartition("@")[2])
            key = entry.domain if entry else None
            counts[key] = counts.get(key, 0) + 1
    found = []
    for domain, count in counts.items():
        entry = relay.sender_relay(domain) if domain else None
        host = entry.host if entry else relay.host
        if host is not None:
            found.append(Refusal(host, domain, count))
    return tuple(sorted(found, key=lambda r: (r.domain or "", r.host)))


def has_relays(relay: Relay) -> bool:
    """Whether any mail goes through a relay (relay.host or relay.by_sender_domain)."""
    return relay.host is not None or bool(relay.by_sender_domain)


def relay_names(relay: Relay) -> list[str]:
    """Each relay as `check health` names it: relay.host, then each sender domain's."""
    names = [relay.host] if relay.host is not None else []
    return names + [relay_label(e.host, e.domain) for e in relay.by_sender_domain]


def refusal_line(stack: Stack) -> str:
    """For `status`: one line when queued mail waits on a relay's refusal of the credentials,
    naming each such relay; empty without relays, with Postfix down, or when none waits."""
    if not has_relays(stack.config.relay) or "postfix" not in stack.compose.running_services():
        return ""
    try:
        found = refusals(stack.config.relay, mailqueue.list_queue(stack.compose).messages)
    except MailstackError:
        return ""  # the queue's own trouble is `check health`'s to name
    return "; ".join(
        f"relay: {refusal} refuses the credentials; {refusal.waiting} ({refusal.fix})"
        for refusal in found
    )
