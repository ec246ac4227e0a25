"""The audit log: every change to the mail directory and to the admin tables, who made it,
from where and when, newest last.

The database writes it (the triggers of migrations/0003_admin.sql), in the transaction of
the change, whoever makes it; the actor comes from mailstack.adapters.psql (ACTOR). This
module only reads it.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import MailstackError, UsageError

DEFAULT_LIMIT = 100
MAX_LIMIT = 100_000
# An actor as recorded (psql.Actor's rule, and 'db:<role>' for changes made by hand), or a
# kind alone ('admin:') for every actor of that kind.
_ACTOR_FILTER = re.compile(r"^[a-z]{1,16}:[!#-\[\]-~]{0,200}\Z")
# C0 and C1 control characters: shown escaped, so an entry cannot move a terminal's cursor.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: str  # UTC, ISO 8601
    actor: str  # cli:root, admin:NAME, token:NAME, mailbox:ADDRESS, db:ROLE (by hand)
    source: str  # host, a client address, or database (by hand)
    action: str  # table.verb: mailbox.add, mailbox.password, token.revoke, ...
    target: str  # the row's key: an address, a name, 'source -> destination'
    detail: str  # never a secret

    def __str__(self) -> str:
        detail = f"  ({self.detail})" if self.detail else ""
        line = f"{self.at}  {self.actor} from {self.source}  {self.action} {self.target}{detail}"
        return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", line)


_LIST = """
SELECT id, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
       actor, source, action, target, detail
FROM (
    SELECT * FROM audit_log
    WHERE at >= coalesce(
            now() - make_interval(secs => CAST(NULLIF(:'since_seconds', '') AS bigint)),
            '-infinity')
      AND (:'actor' = '' OR actor = :'actor'
           OR (right(:'actor', 1) = ':' AND starts_with(actor, :'actor')))
    ORDER BY id DESC
    LIMIT CAST(:'limit' AS integer)
) latest
ORDER BY id;
"""


def check_filters(since: datetime.timedelta | None, actor: str | None, limit: int) -> None:
    """The filters of list_entries, or one line naming the option that is wrong."""
    if since is not None and since <= datetime.timedelta(0):
        raise UsageError(f"--since: {since} is not a positive duration (e.g. 7d, 12h)")
    if actor is not None and not _ACTOR_FILTER.match(actor):
        raise UsageError(
            f"--actor: {actor[:80]!r} is not an actor (kind:who, e.g. cli:root, admin:alice) "
            "or a kind (e.g. admin:)"
        )
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"--limit: {limit} is not between 1 and {MAX_LIMIT}")


def list_entries(
    compose: Executor,
    since: datetime.timedelta | None = None,
    actor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[AuditEntry]:
    """The latest `limit` entries (oldest first), only those younger than `since` and by
    `actor` (exactly, or every actor of a kind given as 'kind:') when given."""
    check_filters(since, actor, limit)
    rows = psql.query(
        compose,
        _LIST,
        {
            "since_seconds": "" if since is None else str(int(since.total_seconds())),
            "actor": actor or "",
            "limit": str(limit),
        },
    )
    if any(len(row) != 7 or not row[0].isdigit() for row in rows):
        raise MailstackError("unexpected answer from the database")
    return [AuditEntry(int(row[0]), row[1], row[2], row[3], row[4], row[5], row[6]) for row in rows]
