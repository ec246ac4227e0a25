"""The plan of an accounts import (pure): the directory now and as wanted -> its changes.

A Snapshot is the whole directory, read from the database or from the accounts file;
`diff` lists what making the first equal to the second adds, removes and changes, per kind,
in a stable order and never showing a hash.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from mailstack.accounts.mailstore import MAIL_ROOT
from mailstack.errors import UsageError
from mailstack.units import format_size

# --- a directory, as the file or the database holds it -------------------------------------


@dataclass(frozen=True)
class MailboxState:
    password_hash: str
    quota_bytes: int
    active: bool


@dataclass(frozen=True)
class AppPasswordState:
    lookup_key: str
    password_hash: str


@dataclass(frozen=True)
class Snapshot:
    """The whole directory, keyed the way the diff compares it."""

    domains: Mapping[str, bool] = field(default_factory=dict)  # name -> active
    alias_domains: Mapping[str, str] = field(default_factory=dict)  # name -> target
    mailboxes: Mapping[str, MailboxState] = field(default_factory=dict)
    aliases: Mapping[str, frozenset[str]] = field(default_factory=dict)  # source -> dests
    senders: frozenset[tuple[str, str]] = frozenset()  # (login, sender)
    app_passwords: Mapping[tuple[str, str], AppPasswordState] = field(default_factory=dict)
    # name -> its domain quota, where it has one (accounts.domain_quota): read from the
    # directory to hold an import to it, never exported or imported (an administrator's)
    domain_quotas: Mapping[str, int] = field(default_factory=dict)


def merged(
    current: Snapshot, imported: Snapshot, keep_passwords: frozenset[str] = frozenset()
) -> Snapshot:
    """The directory with another's domains, mailboxes and aliases added or replacing their
    namesakes; nothing of it removed (an import from another server's export). Mailboxes in
    keep_passwords that exist keep their password (the import had none usable for them)."""
    mailboxes = dict(imported.mailboxes)
    for address in keep_passwords & set(current.mailboxes) & set(mailboxes):
        mailboxes[address] = replace(
            mailboxes[address], password_hash=current.mailboxes[address].password_hash
        )
    return replace(
        current,
        domains={**current.domains, **imported.domains},
        alias_domains={**current.alias_domains, **imported.alias_domains},
        mailboxes={**current.mailboxes, **mailboxes},
        aliases={**current.aliases, **imported.aliases},
    )


# --- the diff --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    kind: str  # domain, alias domain, mailbox, sender, app password, alias
    op: str  # + added, - removed, ~ changed
    key: str
    details: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.op} {self.kind} {self.key}"
        return text + (f": {'; '.join(self.details)}" if self.details else "")


def _quota_text(value: int) -> str:
    return format_size(value) if value else "none"


def diff(current: Snapshot, wanted: Snapshot) -> list[Change]:
    """What an import changes, per kind, in a stable order (never showing a hash)."""
    return [
        *_domain_changes(current, wanted),
        *_alias_domain_changes(current, wanted),
        *_mailbox_changes(current, wanted),
        *_sender_changes(current, wanted),
        *_app_password_changes(current, wanted),
        *_alias_changes(current, wanted),
    ]


def _domain_changes(current: Snapshot, wanted: Snapshot) -> list[Change]:
    changes = []
    for name in sorted(current.domains.keys() | wanted.domains.keys()):
        if name not in current.domains:
            inactive = () if wanted.domains[name] else ("inactive",)
            changes.append(Change("domain", "+", name, inactive))
        elif name not in wanted.domains:
            kept = f"stored mail (if any) is kept in {MAIL_ROOT}/{name}"
            changes.append(Change("domain", "-", name, (kept,)))
        elif current.domains[name] != wanted.domains[name]:
            changes.append(Change("domain", "~", name, (_active(wanted.domains[name]),)))
    return changes


def _alias_domain_changes(current: Snapshot, wanted: Snapshot) -> list[Change]:
    changes = []
    for name in sorted(current.alias_domains.keys() | wanted.alias_domains.keys()):
        old, new = current.alias_domains.get(name), wanted.alias_domains.get(name)
        if old is None:
            changes.append(Change("alias domain", "+", name, (f"-> {new}",)))
        elif new is None:
            changes.append(Change("alias domain", "-", name, (f"-> {old}",)))
        elif old != new:
            changes.append(Change("alias domain", "~", name, (f"target {old} -> {new}",)))
    return changes


def _mailbox_changes(current: Snapshot, wanted: Snapshot) -> list[Change]:
    changes = []
    for address in sorted(current.mailboxes.keys() | wanted.mailboxes.keys()):
        before, after = current.mailboxes.get(address), wanted.mailboxes.get(address)
        if before is None and after is not None:
            details = [f"quota {_quota_text(after.quota_bytes)}"]
            if not after.active:
                details.append("inactive")
            changes.append(Change("mailbox", "+", address, tuple(details)))
        elif after is None:
            local, _, domain = address.rpartition("@")
            kept = f"stored mail (if any) is kept in {MAIL_ROOT}/{domain}/{local}"
            changes.append(Change("mailbox", "-", address, (kept,)))
        elif before is not None and before != after:
            changes.append(Change("mailbox", "~", address, _mailbox_details(before, after)))
    return changes


def _mailbox_details(before: MailboxState, after: MailboxState) -> tuple[str, ...]:
    details = []
    if before.password_hash != after.password_hash:
        details.append("password changed")
    if before.quota_bytes != after.quota_bytes:
        old, new = _quota_text(before.quota_bytes), _quota_text(after.quota_bytes)
        details.append(f"quota {old} -> {new}")
    if before.active != after.active:
        details.append(_active(after.active))
    return tuple(details)


def _sender_changes(current: Snapshot, wanted: Snapshot) -> list[Change]:
    return [
        Change(
            "sender",
            "+" if (login, sender) in wanted.senders else "-",
            sender,
            (f"{login} may send as it",),
        )
        for login, sender in sorted(current.senders ^ wanted.senders)
    ]


def _app_password_changes(current: Snapshot, wanted: Snapshot) -> list[Change]:
    changes = []
    for key in sorted(current.app_passwords.keys() | wanted.app_passwords.keys()):
        address, name = key
        before, after = current.app_passwords.get(key), wanted.app_passwords.get(key)
        label = f"{name} of {address}"
        if before is None:
            changes.append(Change("app password", "+", label))
        elif after is None:
            changes.append(Change("app password", "-", label))
        elif before != after:
            changes.append(Change("app password", "~", label, ("password changed",)))
    return changes


def _alias_changes(current: Snapshot, wanted: Snapshot) -> list[Change]:
    changes = []
    for source in sorted(current.aliases.keys() | wanted.aliases.keys()):
        was = current.aliases.get(source, frozenset())
        will = wanted.aliases.get(source, frozenset())
        if not was:
            changes.append(Change("alias", "+", source, (f"-> {', '.join(sorted(will))}",)))
        elif not will:
            changes.append(Change("alias", "-", source, (f"-> {', '.join(sorted(was))}",)))
        elif was != will:
            details = [f"+ {d}" for d in sorted(will - was)]
            details += [f"- {d}" for d in sorted(was - will)]
            changes.append(Change("alias", "~", source, tuple(details)))
    return changes


def _active(active: bool) -> str:
    return "activated" if active else "deactivated"


def check_own_domain(changes: Sequence[Change], own_domain: str, source: str) -> None:
    for change in changes:
        if change.kind == "domain" and change.op == "-" and change.key == own_domain:
            raise UsageError(
                f"{source}: domains: {own_domain} is missing, but it is the stack's own domain "
                "(mailstack.yaml: domain) and cannot be removed; nothing was changed",
                hint="add it back to domains (see mailstack accounts export)",
            )
