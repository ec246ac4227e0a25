"""Web sessions of the admin service's sign-in (table web_sessions, migration 0005).

A session id is 256 bits from `secrets`, sent to the browser once in a cookie; only its
SHA-256 is stored. A session belongs to an administrator or to a mailbox's user (the
self-service pages, `create_for_mailbox`), and a lookup finds only a session of the kind the
caller asks for (an administrator's page never takes a user's session). It moves through
stages: the password was accepted and a code is due (PASSWORD) or an enrolment is (ENROL),
then both factors passed (FULL). Each advance gives the session a new id (no id from before
the second factor is worth anything after it).

Timeouts are enforced by the lookup's own WHERE, in the database's clock:
- IDLE_TIMEOUT (15 min) since the last request, and ABSOLUTE_TIMEOUT (8 h) since the
  password was accepted: then the session is gone and the user signs in again;
- STEP_TIMEOUT (10 min) for a session that has not passed its second factor yet;
- REAUTH_WINDOW (5 min): a sensitive action needs the password typed within it (reauth_at).

CSRF: every form carries a synchronizer token derived from the session id
(HMAC-SHA256(id, purpose)): per session, never stored, unknown to anyone without the
HttpOnly cookie, compared in constant time. Before a session exists (the sign-in form) the
same is done with a pre-session cookie of its own.

Loaded by the admin service on Debian's own Python: no pydantic, typer or rich.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TypeGuard

from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import MailstackError

IDLE_TIMEOUT_SECONDS = 15 * 60
ABSOLUTE_TIMEOUT_SECONDS = 8 * 60 * 60
STEP_TIMEOUT_SECONDS = 10 * 60
REAUTH_WINDOW_SECONDS = 5 * 60

PASSWORD = "password"  # noqa: S105  # a stage: the password passed, the TOTP code is due
ENROL = "enrol"  # the password passed; no confirmed second factor: enrolment is due
FULL = "full"
STAGES = (PASSWORD, ENROL, FULL)

ID_BYTES = 32  # 256 bits
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_ID_LENGTH = 43  # token_urlsafe(32)
_CSRF_PURPOSE = b"mailstack admin csrf v1"


@dataclass(frozen=True)
class Session:
    """A live session as the lookup found it (its id is what the browser holds)."""

    id: str
    admin: str | None
    mailbox: str | None
    stage: str
    reauthenticated: bool  # the password was typed within REAUTH_WINDOW

    @property
    def full(self) -> bool:
        return self.stage == FULL

    @property
    def csrf_token(self) -> str:
        return csrf_token(self.id)


def new_id() -> str:
    """A fresh session (or pre-session) id: 256 bits, URL-safe base64."""
    return secrets.token_urlsafe(ID_BYTES)


def well_formed(session_id: str | None) -> TypeGuard[str]:
    """Whether a cookie value can be an id at all (anything else never reaches the database)."""
    return (
        session_id is not None
        and len(session_id) == _ID_LENGTH
        and all(ch in _ID_CHARS for ch in session_id)
    )


def id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def csrf_token(session_id: str) -> str:
    """The synchronizer token of the forms of one session (or pre-session)."""
    return hmac.new(session_id.encode("ascii"), _CSRF_PURPOSE, hashlib.sha256).hexdigest()


def csrf_valid(session_id: str | None, presented: str | None) -> bool:
    """Whether a form's token belongs to this session; constant-time."""
    if not well_formed(session_id) or presented is None or len(presented) > 128:
        return False
    return hmac.compare_digest(csrf_token(session_id).encode(), presented.encode("utf-8"))


_TIMEOUTS = {
    "idle_seconds": str(IDLE_TIMEOUT_SECONDS),
    "absolute_seconds": str(ABSOLUTE_TIMEOUT_SECONDS),
    "step_seconds": str(STEP_TIMEOUT_SECONDS),
}

# Expired sessions of anybody go when a new one is made: the table stays small.
_PRUNE = """
DELETE FROM web_sessions
WHERE last_seen < now() - make_interval(secs => CAST(:'idle_seconds' AS integer))
    OR created < now() - make_interval(secs => CAST(:'absolute_seconds' AS integer))
    OR (stage <> 'full'
        AND created < now() - make_interval(secs => CAST(:'step_seconds' AS integer)));
"""

# An active administrator's session.
_CREATE = (
    _PRUNE
    + """
INSERT INTO web_sessions (id_hash, admin, stage, source)
SELECT :'id_hash', name, :'stage', :'source' FROM admins WHERE name = :'owner' AND active
RETURNING 'created';
"""
)

# The one lookup: a row only while every timeout holds; it counts as activity.
_LOOKUP = """
UPDATE web_sessions SET last_seen = now()
WHERE id_hash = :'id_hash'
    AND last_seen >= now() - make_interval(secs => CAST(:'idle_seconds' AS integer))
    AND created >= now() - make_interval(secs => CAST(:'absolute_seconds' AS integer))
    AND (stage = 'full'
        OR created >= now() - make_interval(secs => CAST(:'step_seconds' AS integer)))
    -- a deactivated administrator's or mailbox's sessions stop at once (a removed one's
    -- are deleted)
    AND (admin IS NULL OR admin IN (SELECT name FROM admins WHERE active))
    AND (mailbox IS NULL OR mailbox IN (SELECT address FROM mailboxes WHERE active))
    -- only the kind of session the page serves
    AND ((:'kind' = 'admin' AND admin IS NOT NULL) OR (:'kind' = 'mailbox' AND mailbox IS NOT NULL))
RETURNING 'session', coalesce(admin, ''), coalesce(mailbox, ''), stage,
    reauth_at >= now() - make_interval(secs => CAST(:'reauth_seconds' AS integer));
"""

# A new id with the next stage, only from the stage the caller saw (never skipped, never
# twice: of two parallel advances one finds no row).
_ADVANCE = """
UPDATE web_sessions SET id_hash = :'new_hash', stage = :'stage', last_seen = now()
WHERE id_hash = :'id_hash' AND stage = :'from_stage'
RETURNING 'advanced';
"""

_REAUTHENTICATED = """
UPDATE web_sessions SET reauth_at = now() WHERE id_hash = :'id_hash' AND stage = 'full'
RETURNING 'reauthenticated';
"""

# A mailbox's user (self-service): an active mailbox; with no second factor in force and
# policy.mfa optional the session starts full.
_CREATE_MAILBOX = (
    _PRUNE
    + """
INSERT INTO web_sessions (id_hash, mailbox, stage, source)
SELECT :'id_hash', address, :'stage', :'source' FROM mailboxes
WHERE address = :'owner' AND active
RETURNING 'created';
"""
)

_END = "DELETE FROM web_sessions WHERE id_hash = :'id_hash' RETURNING 'ended';"

# A passkey ceremony's state (migration 0008), held by the session that began it.
_HOLD_CEREMONY = """
UPDATE web_sessions SET passkey_state = :'state' WHERE id_hash = :'id_hash' AND stage = :'stage'
RETURNING 'held';
"""

# Taken once: the row lock makes a parallel take wait and then find NULL.
_TAKE_CEREMONY = """
UPDATE web_sessions AS now_row SET passkey_state = NULL
FROM (SELECT id_hash, passkey_state FROM web_sessions
      WHERE id_hash = :'id_hash' AND stage = :'stage' FOR UPDATE) AS before
WHERE now_row.id_hash = before.id_hash AND before.passkey_state IS NOT NULL
RETURNING 'taken', before.passkey_state;
"""


def create(executor: Executor, admin: str, stage: str, source: str) -> Session:
    """A new session of an (active) administrator whose password was just accepted."""
    if stage not in (PASSWORD, ENROL):
        raise ValueError(f"a session starts at {PASSWORD} or {ENROL}, not {stage}")
    session_id = _start(executor, _CREATE, admin, stage, source)
    if session_id is None:
        raise MailstackError(f"administrator {admin} does not exist or is inactive")
    return Session(session_id, admin, None, stage, reauthenticated=True)


def create_for_mailbox(executor: Executor, mailbox: str, stage: str, source: str) -> Session:
    """A new session of an (active) mailbox's user whose password was just accepted: at
    PASSWORD (a code is due), ENROL (policy.mfa required, no factor yet) or FULL."""
    if stage not in STAGES:
        raise ValueError(f"not a stage: {stage}")
    session_id = _start(executor, _CREATE_MAILBOX, mailbox, stage, source)
    if session_id is None:
        raise MailstackError(f"mailbox {mailbox} does not exist or is inactive")
    return Session(session_id, None, mailbox, stage, reauthenticated=True)


def _start(executor: Executor, sql: str, owner: str, stage: str, source: str) -> str | None:
    """A new session's id, stored (as its hash) for `owner`; None if the owner is not active."""
    session_id = new_id()
    rows = psql.query(
        executor,
        sql,
        {**_TIMEOUTS, "owner": owner, "stage": stage, "source": source[:100] or "unknown"},
        prelude=psql.set_secret_variable("id_hash", id_hash(session_id)),
        single_transaction=True,
    )
    return session_id if any(row[0] == "created" for row in rows) else None


def lookup(executor: Executor, session_id: str | None, kind: str = "admin") -> Session | None:
    """The live session of this id and kind ("admin" or "mailbox"), or None (unknown,
    another kind's, signed out, or timed out)."""
    if not well_formed(session_id) or kind not in ("admin", "mailbox"):
        return None
    rows = psql.query(
        executor,
        _LOOKUP,
        {**_TIMEOUTS, "reauth_seconds": str(REAUTH_WINDOW_SECONDS), "kind": kind},
        prelude=psql.set_secret_variable("id_hash", id_hash(session_id)),
    )
    found = [row for row in rows if row and row[0] == "session"]
    if not found:
        return None
    _, admin, mailbox, stage, fresh = found[0]
    if stage not in STAGES:
        raise MailstackError("unexpected answer from the database")
    return Session(session_id, admin or None, mailbox or None, stage, reauthenticated=fresh == "t")


def advance(executor: Executor, session: Session, stage: str) -> Session:
    """The session at its next stage, under a new id; MailstackError if it moved meanwhile."""
    if stage not in STAGES or STAGES.index(stage) <= STAGES.index(session.stage):
        raise ValueError(f"a session cannot go from {session.stage} to {stage}")
    new = new_id()
    rows = psql.query(
        executor,
        _ADVANCE,
        {"stage": stage, "from_stage": session.stage},
        prelude=psql.set_secret_variable("id_hash", id_hash(session.id))
        + psql.set_secret_variable("new_hash", id_hash(new)),
    )
    if not any(row and row[0] == "advanced" for row in rows):
        raise MailstackError("the session changed meanwhile; sign in again")
    return Session(new, session.admin, session.mailbox, stage, session.reauthenticated)


def reauthenticated(executor: Executor, session: Session) -> Session:
    """Record that the password was just typed again (before a sensitive action)."""
    rows = psql.query(
        executor,
        _REAUTHENTICATED,
        prelude=psql.set_secret_variable("id_hash", id_hash(session.id)),
    )
    if not any(row and row[0] == "reauthenticated" for row in rows):
        raise MailstackError("the session ended meanwhile; sign in again")
    return Session(session.id, session.admin, session.mailbox, session.stage, True)


def end(executor: Executor, session_id: str | None) -> bool:
    """Sign out: the session is deleted; True if there was one."""
    if not well_formed(session_id):
        return False
    rows = psql.query(
        executor, _END, prelude=psql.set_secret_variable("id_hash", id_hash(session_id))
    )
    return any(row and row[0] == "ended" for row in rows)


def hold_ceremony(executor: Executor, session: Session, state: str) -> None:
    """Keep a passkey ceremony's state with the session, replacing any earlier one."""
    rows = psql.query(
        executor,
        _HOLD_CEREMONY,
        {"state": state, "stage": session.stage},
        prelude=psql.set_secret_variable("id_hash", id_hash(session.id)),
    )
    if not any(row and row[0] == "held" for row in rows):
        raise MailstackError("the session ended meanwhile; sign in again")


def take_ceremony(executor: Executor, session: Session) -> str | None:
    """The state of the session's passkey ceremony, removed as it is read: None when there
    is none (never begun, or already answered)."""
    rows = psql.query(
        executor,
        _TAKE_CEREMONY,
        {"stage": session.stage},
        prelude=psql.set_secret_variable("id_hash", id_hash(session.id)),
    )
    taken = [row[1] for row in rows if len(row) > 1 and row[0] == "taken"]
    return taken[0] if taken else None
