"""`mailstack report dmarc|tls`: the aggregate reports in the mailboxes the published rua
addresses deliver to, read through Dovecot's own `doveadm fetch` in the dovecot container
(mail_crypt decrypts on the way; nothing is changed in the mailbox) and summed up by
mailstack.mailauth.aggregate.

Which mailboxes: the rua address of each mail domain (dns.dmarc_rua / dns.tls_rpt_rua, by
default postmaster@ the domain), followed through the directory's aliases (and a catch-all)
to the local mailboxes it delivers to. An address delivered outside the stack, or nowhere,
is said in a note and not read. INBOX and Junk are read: a report that the spam filter
filed away still counts.
"""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailstack import services
from mailstack.accounts.aliases import list_aliases
from mailstack.accounts.directory import list_domains, list_mailboxes
from mailstack.adapters.psql import Executor
from mailstack.errors import ExternalCommandFailed, MailstackError, UsageError
from mailstack.mailauth import aggregate
from mailstack.mailauth.aggregate import DmarcTotals, Rejected, TlsTotals
from mailstack.mailauth.dnsrecords import dmarc_report_address, tls_report_address
from mailstack.mailauth.reportarchive import DEFAULT_LIMITS, Limits
from mailstack.mailauth.reportformats import DmarcReport, TlsReport, clean

if TYPE_CHECKING:
    from mailstack.stack.config import Config
    from mailstack.stack.stackdir import Stack

MAIL_SERVICE = services.DOVECOT.name
FOLDERS = ("INBOX", "Junk")
DEFAULT_DAYS = 7
MAX_DAYS = 366
MAX_ALIAS_DEPTH = 5
_BASE64_GROWTH = 1.4  # a message carries its attachment base64-encoded, with headers


@dataclass(frozen=True)
class MailboxMessages:
    """The messages of the last days in one mailbox, as read, and those left unread."""

    mailbox: str
    messages: tuple[bytes, ...]
    too_large: tuple[Rejected, ...]


@dataclass(frozen=True)
class DmarcSummary:
    days: int
    mailboxes: tuple[str, ...]  # the mailboxes read
    messages_read: int
    totals: DmarcTotals
    rejected: tuple[Rejected, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class TlsSummary:
    days: int
    mailboxes: tuple[str, ...]
    messages_read: int
    totals: TlsTotals
    rejected: tuple[Rejected, ...]
    notes: tuple[str, ...]


def report_days(text: str) -> int:
    """--days: a whole number of days from 1 to MAX_DAYS; UsageError naming it otherwise."""
    value = text.strip()
    if value.isascii() and value.isdigit() and len(value) <= 3 and 1 <= int(value) <= MAX_DAYS:
        return int(value)
    raise UsageError(f"--days: {text[:40]!r} is not a whole number of days from 1 to {MAX_DAYS}")


@dataclass(frozen=True)
class _Gathered:
    """What both summaries read: the mailboxes, their messages and the reports of one kind."""

    mailboxes: tuple[str, ...]
    messages_read: int
    reports: list[DmarcReport | TlsReport]
    rejected: tuple[Rejected, ...]
    notes: tuple[str, ...]


def _gather(
    stack: Stack, days: int, limits: Limits, address_of: Callable[[Config, str], str], kind: str
) -> _Gathered:
    """Every domain's report address (as address_of says) to its mailboxes, read."""
    addresses = [address_of(stack.config, d.name) for d in list_domains(stack.compose)]
    mailboxes, notes = report_mailboxes(stack.compose, addresses)
    found = [read_mailbox(stack.compose, mailbox, days, limits) for mailbox in mailboxes]
    reports, rejected = _reports(found, limits, kind)
    read = sum(len(box.messages) for box in found)
    return _Gathered(mailboxes, read, reports, rejected, notes)


def dmarc_summary(
    stack: Stack, days: int = DEFAULT_DAYS, limits: Limits = DEFAULT_LIMITS
) -> DmarcSummary:
    got = _gather(stack, days, limits, dmarc_report_address, aggregate.DMARC)
    return DmarcSummary(
        days=days,
        mailboxes=got.mailboxes,
        messages_read=got.messages_read,
        totals=aggregate.dmarc_totals(r for r in got.reports if isinstance(r, DmarcReport)),
        rejected=got.rejected,
        notes=got.notes,
    )


def tls_summary(
    stack: Stack, days: int = DEFAULT_DAYS, limits: Limits = DEFAULT_LIMITS
) -> TlsSummary:
    got = _gather(stack, days, limits, tls_report_address, aggregate.TLS)
    return TlsSummary(
        days=days,
        mailboxes=got.mailboxes,
        messages_read=got.messages_read,
        totals=aggregate.tls_totals(r for r in got.reports if isinstance(r, TlsReport)),
        rejected=got.rejected,
        notes=got.notes,
    )


def _reports(
    found: list[MailboxMessages], limits: Limits, kind: str
) -> tuple[list[DmarcReport | TlsReport], tuple[Rejected, ...]]:
    """The reports of one kind in every message, and the rejections of that kind."""
    reports: list[DmarcReport | TlsReport] = []
    rejected: list[Rejected] = []
    for box in found:
        rejected += [r for r in box.too_large if r.kind == kind]
        for raw in box.messages:
            read = aggregate.read_message(raw, limits)
            reports += read.dmarc if kind == aggregate.DMARC else read.tls
            rejected += [r for r in read.rejected if r.kind == kind]
    return reports, tuple(rejected)


# --- where the rua addresses deliver ----------------------------------------------------------


def report_mailboxes(
    compose: Executor, addresses: list[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the local mailboxes the addresses deliver to, notes on the ones that deliver none)."""
    mailboxes = {m.address.lower() for m in list_mailboxes(compose)}
    aliases: dict[str, list[str]] = {}
    for alias in list_aliases(compose):
        aliases.setdefault(alias.source.lower(), []).extend(alias.destinations)
    found: list[str] = []
    notes: list[str] = []
    for address in dict.fromkeys(a.lower() for a in addresses):
        local = delivered_to(address, mailboxes, aliases)
        if not local:
            notes.append(
                f"{address} delivers to no mailbox of this stack (an outside address, or "
                f"neither a mailbox nor an alias): its reports are not read here"
            )
        found += [mailbox for mailbox in local if mailbox not in found]
    return tuple(found), tuple(notes)


def delivered_to(
    address: str, mailboxes: set[str], aliases: dict[str, list[str]], depth: int = 0
) -> list[str]:
    """The local mailboxes mail to `address` lands in: itself, or what its alias (else its
    domain's catch-all) points to, followed up to MAX_ALIAS_DEPTH aliases deep."""
    address = address.lower()
    if address in mailboxes:
        return [address]
    if depth >= MAX_ALIAS_DEPTH:
        return []
    targets = aliases.get(address) or aliases.get("@" + address.rpartition("@")[2], [])
    found: list[str] = []
    for target in targets:
        for mailbox in delivered_to(target, mailboxes, aliases, depth + 1):
            if mailbox not in found:
                found.append(mailbox)
    return found


# --- reading a mailbox with doveadm -----------------------------------------------------------


def read_mailbox(
    compose: Executor, mailbox: str, days: int, limits: Limits = DEFAULT_LIMITS
) -> MailboxMessages:
    """The messages received in the last `days` days in INBOX and Junk; the ones too large
    to hold a report within `limits` are not fetched but named as rejected."""
    largest = int(limits.compressed_bytes * _BASE64_GROWTH) + 64 * 1024
    since = ["SINCE", f"{days}d"]
    messages: list[bytes] = []
    too_large: list[Rejected] = []
    for folder in FOLDERS:
        where = ["mailbox", folder, *since]
        for row in _fetch(compose, mailbox, "text", [*where, "SMALLER", str(largest)]):
            messages.append(_text(row, "text"))
        for row in _fetch(compose, mailbox, "hdr", [*where, "LARGER", str(largest - 1)]):
            too_large += _too_large(_text(row, "hdr"), largest)
    return MailboxMessages(mailbox, tuple(messages), tuple(too_large))


def _too_large(header: bytes, largest: int) -> list[Rejected]:
    parsed = email.message_from_bytes(header, policy=email.policy.compat32)
    label = aggregate.message_label(parsed)
    reason = f"message over {largest} bytes, larger than a report may be: not read"
    return [Rejected(label, kind, reason) for kind in (aggregate.DMARC, aggregate.TLS)]


def _fetch(compose: Executor, mailbox: str, field: str, query: list[str]) -> list[dict[str, Any]]:
    argv = ["doveadm", "-f", "json", "fetch", "-u", mailbox, field, *query]
    try:
        output = compose.exec(MAIL_SERVICE, argv, input=b"", timeout=300)
    except ExternalCommandFailed as e:
        if "doesn't exist" in e.output or "not found" in e.output.lower():
            return []  # no Junk folder yet
        raise
    try:
        # Dovecot writes the message's bytes into JSON strings; bytes that are not UTF-8
        # come back unchanged through surrogateescape.
        rows = json.loads(output.decode("utf-8", "surrogateescape") or "[]")
    except ValueError as e:
        raise MailstackError(
            f"unexpected answer from doveadm fetch for {mailbox}: {clean(str(e))}"
        ) from None
    if not isinstance(rows, list):
        raise MailstackError(f"unexpected answer from doveadm fetch for {mailbox}")
    return [row for row in rows if isinstance(row, dict)]


def _text(row: dict[str, Any], field: str) -> bytes:
    value = row.get(field)
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else b""
