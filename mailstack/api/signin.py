"""The admin service's web sign-in, free of any web framework: password, then the second
factor (a TOTP code or a recovery code, or the enrolment of one when none is confirmed yet),
then a full session (mailstack.identity.sessions). compose/admin/adminweb.py only parses
forms, sets the cookie, renders pages and calls these functions.

Every password and code is checked only after the bans service allowed the client's address
(`admit`, whose delay the caller waits out without holding a thread), and every result is
reported to it, so failed web sign-ins count with IMAP's and SMTP's. An unknown or inactive
name costs the same Argon2id verification as a known one and gets the same line.

Loaded by the admin service on Debian's own Python: no pydantic, typer or rich.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mailstack.accounts import directory, names, passwords, usage
from mailstack.adapters import psql
from mailstack.adapters.bansclient import ALLOWED, Verdict
from mailstack.adapters.psql import Executor
from mailstack.api import operations
from mailstack.errors import MailstackError, UsageError
from mailstack.identity import mfa, principal, sessions
from mailstack.identity.sessions import Session

WRONG_PASSWORD = "The name or the password is wrong."  # noqa: S105  # a message
WRONG_CODE = "The code is wrong, or it was used already."
# Verified when the name is unknown, so that it costs what a known one does; the parameters
# are passwords.py's (a unit test holds them to it). It matches no password anybody types.
STAND_IN_HASH = (
    "{ARGON2ID}$argon2id$v=19$m=32768,t=2,p=1$O2o73A1FDtwHVeiRigPFCA"
    "$BbUKOaM+M+c8gq4k3Cfnpy40mCX9tyIMHTcorVOM56c"
)
_ADMIN = "SELECT 'admin', password FROM admins WHERE name = :'name' AND active;"


class Guard(Protocol):
    """The bans service as the sign-in sees it (adapters.bansclient.BansClient)."""

    def allow(self, client: str, login: str) -> Verdict: ...

    def report(self, client: str, login: str, secret: str, *, success: bool) -> None: ...


class NoGuard:
    """policy.bans is off: nothing is counted."""

    def allow(self, client: str, login: str) -> Verdict:
        return ALLOWED

    def report(self, client: str, login: str, secret: str, *, success: bool) -> None:
        return None


class SignInRefused(MailstackError):
    """A sign-in step that did not pass: its one line is shown on the form."""


class Banned(SignInRefused):
    """The bans service refuses the client's address: nothing was checked."""


class StageRefused(MailstackError):
    """A request for a step or page the session has not reached (or has passed)."""


@dataclass(frozen=True)
class Attempt:
    """One sign-in attempt: who it claims to be, from where, and bansd's verdict on it."""

    login: str
    client: str
    verdict: Verdict


def admit(guard: Guard, client: str, login: str) -> Attempt:
    """Ask the bans service first; the caller waits `verdict.delay` seconds before going on."""
    return Attempt(login[:256], client, guard.allow(client, login[:256]))


def password(executor: Executor, guard: Guard, attempt: Attempt, typed: str) -> Session:
    """The password step: a session at the code step (a second factor is confirmed) or at
    the enrolment (none yet); SignInRefused with one line for everything else."""
    _require_admitted(attempt)
    stored = _stored_hash(executor, attempt.login)
    with operations.HASHING:  # 32 MiB each, one at a time (operations.HASHING)
        matches = passwords.verify_password(stored or STAND_IN_HASH, typed[: passwords.MAX_LENGTH])
    accepted = matches and stored is not None and len(typed) <= passwords.MAX_LENGTH
    guard.report(attempt.client, attempt.login, typed, success=accepted)
    if not accepted:
        raise SignInRefused(WRONG_PASSWORD)
    name = attempt.login.lower()
    confirmed = mfa.status(executor, mfa.Owner.admin(name)).confirmed
    stage = sessions.PASSWORD if confirmed else sessions.ENROL
    return sessions.create(executor, name, stage, attempt.client)


class ReauthNeeded(MailstackError):
    """A sensitive action, and the password was not typed within sessions.REAUTH_WINDOW."""


def require_recent_password(session: Session) -> None:
    """Call before a sensitive action (administrators, tokens, second factors): the password
    must have been typed within the last five minutes (sessions.REAUTH_WINDOW_SECONDS)."""
    require_stage(session, sessions.FULL)
    if not session.reauthenticated:
        raise ReauthNeeded("type your password again to do this")


def reauthenticate(
    executor: Executor, guard: Guard, attempt: Attempt, session: Session, typed: str
) -> Session:
    """The password typed again in a full session (checked and counted like a sign-in)."""
    require_stage(session, sessions.FULL)
    _require_admitted(attempt)
    name = _admin(session)
    with operations.HASHING:
        matches = passwords.verify_password(
            _stored_hash(executor, name) or STAND_IN_HASH, typed[: passwords.MAX_LENGTH]
        )
    guard.report(attempt.client, name, typed, success=matches)
    if not matches:
        raise SignInRefused(WRONG_PASSWORD)
    return sessions.reauthenticated(executor, session)


def second_factor(
    executor: Executor, guard: Guard, attempt: Attempt, key: bytes, session: Session, code: str,
    now: float,
) -> Session:  # fmt: skip
    """The code step: a TOTP code (±1 step, never twice) or a recovery code (once); the
    session becomes full under a new id."""
    require_stage(session, sessions.PASSWORD)
    _require_admitted(attempt)
    owner = mfa.Owner.admin(_admin(session))
    try:
        accepted = mfa.check(executor, owner, key, code, now).accepted
    except UsageError as malformed:
        guard.report(attempt.client, attempt.login, code, success=False)
        raise SignInRefused(malformed.message) from None
    guard.report(attempt.client, attempt.login, code, success=accepted)
    if not accepted:
        raise SignInRefused(WRONG_CODE)
    return sessions.advance(executor, session, sessions.FULL)


def enrolment(executor: Executor, key: bytes, session: Session, issuer: str) -> mfa.Enrolment:
    """The secret to show at the enrolment step: the one waiting for its first code, or a
    new one."""
    require_stage(session, sessions.ENROL)
    owner = mfa.Owner.admin(_admin(session))
    return mfa.pending(executor, owner, key, issuer=issuer) or mfa.enrol(
        executor, owner, key, issuer=issuer
    )


def confirm_enrolment(
    executor: Executor, key: bytes, session: Session, code: str, now: float
) -> tuple[Session, mfa.RecoveryCodes]:
    """The first code confirms the enrolment: the recovery codes (shown once) and a full
    session under a new id."""
    require_stage(session, sessions.ENROL)
    try:
        codes = mfa.confirm(executor, mfa.Owner.admin(_admin(session)), key, code, now)
    except UsageError as refused:
        raise SignInRefused(refused.message) from None
    return sessions.advance(executor, session, sessions.FULL), codes


def require_stage(session: Session | None, stage: str) -> Session:
    """The session, if it is at exactly this stage (a page needs FULL): no step is skipped."""
    if session is None or session.stage != stage:
        raise StageRefused(f"this step needs a session at the {stage} stage")
    return session


def acting(
    executor: Executor, session: Session, client: str
) -> tuple[principal.Principal, psql.Actor]:
    """Who a full session's request acts as (identity.principal) and how the audit log names
    it: admin:NAME from the client's address."""
    require_stage(session, sessions.FULL)
    who = principal.for_admin(executor, _admin(session))
    return who, psql.Actor.from_client(who.actor, client)


def visible_mailboxes(executor: Executor, who: principal.Principal) -> list[directory.Mailbox]:
    """The mailboxes of the domains this principal manages, with their use (Dovecot's)."""
    mailboxes = directory.list_mailboxes(executor, None)
    allowed = set(who.visible(sorted({mailbox.domain for mailbox in mailboxes})))
    return usage.with_usage(executor, [m for m in mailboxes if m.domain in allowed])


def add_mailbox(
    executor: Executor, who: principal.Principal, address: str, typed: str, quota: str | None,
    default_quota: str,
) -> dict[str, object]:  # fmt: skip
    """The form's "add mailbox": operations.create_mailbox, the API's own (the CLI's address
    rule, the principal's domains, the CLI's rules and lines); ApiError's line."""
    return operations.create_mailbox(executor, who, address, typed, quota or None, default_quota)


def _require_admitted(attempt: Attempt) -> None:
    if attempt.verdict.refused is not None:
        raise Banned(attempt.verdict.refused)


def _stored_hash(executor: Executor, login: str) -> str | None:
    try:
        name = names.admin_name(login)
    except ValueError:
        return None  # cannot be a name: costs the same hash below
    rows = psql.query(executor, _ADMIN, {"name": name})
    found = [row[1] for row in rows if row and row[0] == "admin"]
    return found[0] if found else None


def _admin(session: Session) -> str:
    if session.admin is None:
        raise StageRefused("this session is not an administrator's")
    return session.admin
