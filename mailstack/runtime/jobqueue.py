"""The host job queue (table host_jobs, migration 0006): work the admin service asks of the
host, which it cannot do itself because it has no Docker socket (by design): publishing a
new domain's DKIM key (render, rspamd restart), ending a removed user's IMAP sessions,
and what the host-report pages ask (clear a ban, retry or delete queued mail, rotate a
DKIM key, make a report now).

The admin service only adds a pending job and reads its own (its role's grants and row
security); `mailstack jobs run` on the host (mailstack.runtime.jobs) takes them. This module
is the table's SQL only, so the admin service can load it on Debian's own Python: it imports
nothing of pydantic, typer or rich.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import MailstackError

PUBLISH_KEY = "domain.publish_key"  # target: a mail domain
KICK_SESSIONS = "sessions.kick"  # target: an address, or *@domain
# Migration 0011: the host-report pages' actions (hostreports.py names the topics).
CLEAR_BAN = "ban.clear"  # target: a banned address (bansd's key: IPv4, or an IPv6 /64)
RETRY_QUEUED = "queue.retry"  # target: a Postfix queue id, or ALL
DELETE_QUEUED = "queue.delete"  # target: a Postfix queue id
ROTATE_DKIM = "dkim.rotate"  # target: a mail domain
REFRESH_REPORT = "report.refresh"  # target: a host report topic
KINDS = (
    PUBLISH_KEY,
    KICK_SESSIONS,
    CLEAR_BAN,
    RETRY_QUEUED,
    DELETE_QUEUED,
    ROTATE_DKIM,
    REFRESH_REPORT,
)
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
# A job left running this long was taken by a run that died: the next run takes it again
# (every kind is safe to run twice).
STALE_AFTER = "30 minutes"
MAX_REASON = 400
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_STAMP = '\'YYYY-MM-DD"T"HH24:MI:SS"Z"\''


@dataclass(frozen=True)
class HostJob:
    id: int
    kind: str
    target: str
    state: str
    requested_by: str
    requested: str
    finished: str | None
    reason: str

    def __str__(self) -> str:
        when = f" at {self.finished}" if self.finished else ""
        why = f": {self.reason}" if self.reason else ""
        return (
            f"#{self.id}  {self.kind} {self.target}  {self.state}{when}{why}  "
            f"(requested by {self.requested_by} at {self.requested})"
        )


@dataclass(frozen=True)
class KeyState:
    """What the latest domain.publish_key job of a domain says."""

    state: str
    reason: str


_QUEUE = """
INSERT INTO host_jobs (kind, target) VALUES (:'kind', :'target') RETURNING id;
"""

_KEY_STATES = f"""
SELECT DISTINCT ON (target) target, state, reason FROM host_jobs
WHERE kind = '{PUBLISH_KEY}' ORDER BY target, id DESC;
"""  # noqa: S608  # a constant of this module

# The oldest pending job (or one left running by a run that died) and every other job of
# the same kind and target: they are one piece of work, run once.
_CLAIM = f"""
WITH next AS (
    SELECT kind, target FROM host_jobs
    WHERE state = 'pending'
       OR (state = 'running' AND started < now() - interval '{STALE_AFTER}')
    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
),
taken AS (
    UPDATE host_jobs j SET state = 'running', started = now()
    FROM next
    WHERE j.kind = next.kind AND j.target = next.target
      AND (j.state = 'pending'
           OR (j.state = 'running' AND j.started < now() - interval '{STALE_AFTER}'))
    RETURNING j.id, j.kind, j.target
)
SELECT id, kind, target FROM taken ORDER BY id;
"""  # noqa: S608  # constants of this module

_FINISH = """
UPDATE host_jobs SET state = :'state', finished = now(), reason = :'reason'
WHERE id = ANY (CAST(string_to_array(:'ids', ',') AS bigint[])) AND state = 'running';
"""

_RETRY = """
UPDATE host_jobs SET state = 'pending', started = NULL, finished = NULL, reason = ''
WHERE state = 'failed' RETURNING id;
"""

_LIST = f"""
SELECT id, kind, target, state, requested_by,
    to_char(requested AT TIME ZONE 'UTC', {_STAMP}),
    coalesce(to_char(finished AT TIME ZONE 'UTC', {_STAMP}), ''), reason
FROM (SELECT * FROM host_jobs ORDER BY id DESC LIMIT CAST(:'limit' AS integer)) latest
ORDER BY id;
"""  # noqa: S608  # constants of this module


def queue(executor: Executor, kind: str, target: str) -> int:
    """Add a pending job; its number."""
    if kind not in KINDS:
        raise ValueError(f"not a host job: {kind!r}")  # a caller's typo, not input
    rows = psql.query(executor, _QUEUE, {"kind": kind, "target": target})
    if len(rows) != 1 or not rows[0][0].isdigit():
        raise MailstackError("unexpected answer from the database")
    return int(rows[0][0])


def key_states(executor: Executor) -> dict[str, KeyState]:
    """{domain: the state of its latest publish_key job}; a domain the API never added has
    none (the host published its key when it added the domain)."""
    return {row[0]: KeyState(row[1], row[2]) for row in psql.query(executor, _KEY_STATES)}


def claim(executor: Executor) -> list[tuple[int, str, str]]:
    """Take the next piece of work: [(id, kind, target)], one kind and target; [] when none."""
    rows = psql.query(executor, _CLAIM)
    try:
        return [(int(row[0]), row[1], row[2]) for row in rows]
    except (IndexError, ValueError):
        raise MailstackError("unexpected answer from the database") from None


def finish(executor: Executor, ids: list[int], state: str, reason: str) -> None:
    """Record how taken jobs ended (done or failed) with a one-line reason."""
    if state not in (DONE, FAILED):
        raise ValueError(f"not a final state: {state!r}")
    psql.query(
        executor,
        _FINISH,
        {"state": state, "reason": one_line(reason), "ids": ",".join(map(str, ids))},
    )


def retry_failed(executor: Executor) -> int:
    """Make every failed job pending again; how many."""
    return len(psql.query(executor, _RETRY))


def list_jobs(executor: Executor, limit: int = 50) -> list[HostJob]:
    rows = psql.query(executor, _LIST, {"limit": str(limit)})
    if any(len(row) != 8 or not row[0].isdigit() for row in rows):
        raise MailstackError("unexpected answer from the database")
    return [
        HostJob(int(row[0]), row[1], row[2], row[3], row[4], row[5], row[6] or None, row[7])
        for row in rows
    ]


def one_line(text: str) -> str:
    """A reason as the table keeps it: one line, no control characters, bounded."""
    line = _CONTROL.sub(" ", text).strip()
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 1] + "…"
