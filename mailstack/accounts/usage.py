"""Each mailbox's quota use and its recent sign-ins, as Dovecot itself records them in
PostgreSQL (migration 0013): quota_clone copies the quota's usage into quota_usage after
every change, last_login writes each IMAP and ManageSieve sign-in into sign_ins, both
through Dovecot's dict (templates/config/dovecot/dovecot-sql-dict.conf.ext). The admin
service reads them here: it cannot reach Dovecot (doveadm) from its container.

Scoping is the callers': self-service asks for the session's own mailbox only, the pages
and the API for the mailboxes their principal may see. Every statement is constant SQL
with psql variables.

Loaded by the admin service on Debian's own Python: no pydantic, typer or rich.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from mailstack.accounts.directory import Mailbox
from mailstack.adapters import psql
from mailstack.adapters.psql import Executor

RECENT_SIGN_INS = 20  # what the account page lists, newest first
KEPT_DAYS = 90  # older sign-ins are pruned by the table's trigger and never shown

# '' for every mailbox (the caller cuts the list to what its principal may see).
_USAGE = """
SELECT 'usage', username, coalesce(bytes, 0), coalesce(messages, 0),
       to_char(updated AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
FROM quota_usage WHERE :'address' = '' OR username = :'address';
"""
_SIGN_INS = """
SELECT 'sign_in', service, remote,
       to_char(to_timestamp(last_seen) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
FROM sign_ins
WHERE username = :'address'
  AND last_seen >= extract(epoch FROM now() - make_interval(days => :'days'::int))
ORDER BY last_seen DESC, service, remote LIMIT :'limit'::int;
"""


@dataclass(frozen=True)
class Usage:
    """A mailbox's use as Dovecot's quota counts it (message sizes), as of `updated`."""

    address: str
    bytes: int
    messages: int
    updated: str  # UTC, ISO 8601

    def percent_of(self, quota_bytes: int) -> int | None:
        """Whole percent of the quota; None when the mailbox has no quota."""
        return round(100 * self.bytes / quota_bytes) if quota_bytes > 0 else None


@dataclass(frozen=True)
class SignIn:
    """The latest sign-in of a mailbox by one protocol from one client address."""

    protocol: str  # imap, managesieve (Dovecot's service names)
    remote: str  # the client's address; for the webmail, the browser's
    last_seen: str  # UTC, ISO 8601


def usage_of(executor: Executor, address: str) -> Usage | None:
    """The mailbox's use; None until Dovecot first recorded one (no mail changed yet)."""
    found = _usage_rows(executor, address)
    return found.get(address)


def with_usage(executor: Executor, mailboxes: Sequence[Mailbox]) -> list[Mailbox]:
    """The mailboxes with storage_bytes and messages filled in where Dovecot recorded them."""
    if not mailboxes:
        return []
    found = _usage_rows(executor, "")
    return [_filled(mailbox, found.get(mailbox.address)) for mailbox in mailboxes]


def recent_sign_ins(executor: Executor, address: str, limit: int = RECENT_SIGN_INS) -> list[SignIn]:
    """The mailbox's sign-ins of the last KEPT_DAYS days, newest first, at most `limit`."""
    rows = psql.query(
        executor, _SIGN_INS, {"address": address, "days": str(KEPT_DAYS), "limit": str(limit)}
    )
    return [SignIn(row[1], row[2], row[3]) for row in rows if len(row) == 4 and row[0] == "sign_in"]


def _usage_rows(executor: Executor, address: str) -> dict[str, Usage]:
    rows = psql.query(executor, _USAGE, {"address": address})
    return {
        row[1]: Usage(row[1], int(row[2]), int(row[3]), row[4])
        for row in rows
        if len(row) == 5 and row[0] == "usage" and row[2].isdigit() and row[3].isdigit()
    }


def _filled(mailbox: Mailbox, usage: Usage | None) -> Mailbox:
    if usage is None:
        return mailbox
    return dataclasses.replace(mailbox, storage_bytes=usage.bytes, messages=usage.messages)
