"""Self-service for mailbox users at /account/ (issue 16), free of any web framework:
compose/admin/webaccount.py parses forms, sets the cookie and renders what these return.

Sign-in: the mailbox address and its account password (Argon2id; an unknown or inactive
address costs the same verification and gets the same line), then the TOTP code (or a
recovery code) if the mailbox has a confirmed second factor. With policy.mfa required a
user without one goes to the enrolment first. Every password and code is asked of the bans
service first and reported after (protocol "account"), so failures here count with IMAP's.

A full session acts only on its own mailbox: every statement is scoped by the session's
address, never by an address or owner from the form, so another user's app password or
second factor cannot even be named. The audit log names the actor `mailbox:ADDRESS`.

Loaded by the admin service on Debian's own Python: no pydantic, typer or rich.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailstack.accounts import access, directory, names, passwords
from mailstack.accounts.usage import SignIn, Usage, recent_sign_ins, usage_of
from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.api import operations
from mailstack.api.signin import (
    STAND_IN_HASH,
    WRONG_CODE,
    Attempt,
    Banned,
    Guard,
    SignInRefused,
    StageRefused,
)
from mailstack.errors import UsageError
from mailstack.identity import mfa, principal, sessions
from mailstack.identity.sessions import Session
from mailstack.runtime import jobqueue

PROTOCOL = "account"  # how these sign-ins show in bansd's log and `mailstack security bans`
WRONG_PASSWORD = "The address or the password is wrong."  # noqa: S105  # a message
WRONG_CURRENT = "The current password is wrong; nothing was changed."
MFA_REQUIRED = (
    "A second factor is required on this server: it cannot be turned off here "
    "(an administrator can reset it: mailstack mailbox mfa disable)."
)
USAGE_UNKNOWN = "How much of it is used is not known yet: it shows once mail arrives."
_MAILBOX = "SELECT 'mailbox', password FROM mailboxes WHERE address = :'address' AND active;"
_QUOTA = "SELECT 'quota', quota_bytes FROM mailboxes WHERE address = :'address';"


@dataclass(frozen=True)
class Overview:
    """What the account page shows: the quota and its use (as Dovecot recorded it), the
    second factor, the app passwords, the recent sign-ins (newest first)."""

    address: str
    quota_bytes: int
    second_factor: mfa.MfaStatus
    app_passwords: tuple[access.AppPassword, ...]
    usage: Usage | None = None
    sign_ins: tuple[SignIn, ...] = ()
    usage_unknown: str = USAGE_UNKNOWN

    @property
    def used_percent(self) -> int | None:
        return self.usage.percent_of(self.quota_bytes) if self.usage else None


def actor(session: Session, client: str) -> psql.Actor:
    """How the audit log names what a user's session changes: mailbox:ADDRESS from the
    client's address."""
    return psql.Actor.from_client(principal.for_user(mailbox_of(session)).actor, client)


def mailbox_of(session: Session) -> str:
    if session.mailbox is None:
        raise StageRefused("this session is not a mailbox user's")
    return session.mailbox


# --- sign-in --------------------------------------------------------------------------------


def password(
    executor: Executor, guard: Guard, attempt: Attempt, typed: str, mfa_required: bool
) -> Session:
    """The password step: a session at PASSWORD (a code is due), ENROL (required and none
    yet) or FULL (no second factor, policy.mfa optional)."""
    if attempt.verdict.refused is not None:
        raise Banned(attempt.verdict.refused)
    address, stored = _stored_hash(executor, attempt.login)
    with operations.HASHING:  # 32 MiB each, one at a time
        matches = passwords.verify_password(stored or STAND_IN_HASH, typed[: passwords.MAX_LENGTH])
    accepted = matches and stored is not None and len(typed) <= passwords.MAX_LENGTH
    guard.report(attempt.client, attempt.login, typed, success=accepted)
    if not accepted or address is None:
        raise SignInRefused(WRONG_PASSWORD)
    confirmed = mfa.status(executor, mfa.Owner.mailbox(address)).confirmed
    stage = _first_stage(confirmed=confirmed, mfa_required=mfa_required)
    return sessions.create_for_mailbox(executor, address, stage, attempt.client)


def second_factor(
    executor: Executor, guard: Guard, attempt: Attempt, key: bytes, session: Session, code: str,
    now: float,
) -> Session:  # fmt: skip
    """The code step: a TOTP code (±1 step, never twice) or a recovery code (once); the
    session becomes full under a new id."""
    _require(session, sessions.PASSWORD)
    accepted = _code_accepted(executor, guard, attempt, key, session, code, now)
    if not accepted:
        raise SignInRefused(WRONG_CODE)
    return sessions.advance(executor, session, sessions.FULL)


# --- the second factor ---------------------------------------------------------------------


def enrolment(executor: Executor, key: bytes, session: Session, issuer: str) -> mfa.Enrolment:
    """The secret to show: the one waiting for its first code, or a new one. At the ENROL
    stage (required), or in a full session without a confirmed factor (by choice)."""
    owner = _enrolling_owner(executor, session)
    return mfa.pending(executor, owner, key, issuer=issuer) or mfa.enrol(
        executor, owner, key, issuer=issuer
    )


def confirm_enrolment(
    executor: Executor, key: bytes, session: Session, code: str, now: float
) -> tuple[Session, mfa.RecoveryCodes]:
    """The first code confirms the enrolment: the recovery codes (shown once); an ENROL
    session becomes full under a new id."""
    owner = _enrolling_owner(executor, session)
    try:
        codes = mfa.confirm(executor, owner, key, code, now)
    except UsageError as refused:
        raise SignInRefused(refused.message) from None
    if session.stage == sessions.ENROL:
        return sessions.advance(executor, session, sessions.FULL), codes
    return session, codes


def disable_second_factor(
    executor: Executor, guard: Guard, attempt: Attempt, key: bytes, session: Session, code: str,
    now: float, mfa_required: bool,
) -> mfa.MfaDisabled:  # fmt: skip
    """Turn the second factor off, proven by a current code (or a recovery code): a stolen
    session alone cannot. Refused where policy.mfa is required."""
    _require(session, sessions.FULL)
    if mfa_required:
        raise SignInRefused(MFA_REQUIRED)
    if not _code_accepted(executor, guard, attempt, key, session, code, now):
        raise SignInRefused(WRONG_CODE)
    return mfa.disable(executor, mfa.Owner.mailbox(mailbox_of(session)))


# --- the pages of a full session -----------------------------------------------------------


def overview(executor: Executor, session: Session) -> Overview:
    _require(session, sessions.FULL)
    address = mailbox_of(session)
    rows = psql.query(executor, _QUOTA, {"address": address})
    quota = [int(row[1]) for row in rows if row and row[0] == "quota" and row[1].isdigit()]
    return Overview(
        address,
        quota[0] if quota else 0,
        mfa.status(executor, mfa.Owner.mailbox(address)),
        tuple(access.list_app_passwords(executor, address)),
        usage_of(executor, address),
        tuple(recent_sign_ins(executor, address)),
    )


def change_password(
    executor: Executor, guard: Guard, attempt: Attempt, session: Session, current: str, new: str,
    again: str,
) -> Session:  # fmt: skip
    """A new account password: the current one proves it is the user (counted like a
    sign-in), the new one is typed twice and meets the CLI's strength rule. Every session
    begun with the old password ends (migration 0014 for the web's, a queued sessions.kick
    for IMAP's); the user goes on in the new session returned."""
    _require(session, sessions.FULL)
    if attempt.verdict.refused is not None:
        raise Banned(attempt.verdict.refused)
    address = mailbox_of(session)
    _, stored = _stored_hash(executor, address)
    with operations.HASHING:
        matches = passwords.verify_password(
            stored or STAND_IN_HASH, current[: passwords.MAX_LENGTH]
        )
    guard.report(attempt.client, address, current, success=matches)
    if not matches or stored is None:
        raise SignInRefused(WRONG_CURRENT)
    if new != again:
        raise UsageError("the new password and its repetition differ; nothing was changed")
    passwords.check_password_strength(new)
    with operations.HASHING:
        password_hash = passwords.hash_password(new)
    directory.set_mailbox_password(executor, address, password_hash)
    jobqueue.queue(executor, jobqueue.KICK_SESSIONS, address)
    return sessions.create_for_mailbox(executor, address, sessions.FULL, attempt.client)


def add_app_password(executor: Executor, session: Session, name: str) -> access.NewAppPassword:
    """A new app password of the session's own mailbox, shown once."""
    _require(session, sessions.FULL)
    return access.add_app_password(executor, mailbox_of(session), name.strip())


def remove_app_password(
    executor: Executor, session: Session, name: str
) -> access.AppPasswordRevoked:
    """Remove one of the session's own mailbox's app passwords (by name: another mailbox's
    cannot be named); its IMAP sessions are ended by the host (a queued sessions.kick job:
    the admin service has no Docker socket)."""
    _require(session, sessions.FULL)
    address = mailbox_of(session)
    revoked = access.revoke_app_password(executor, address, name.strip(), kick=False)
    jobqueue.queue(executor, jobqueue.KICK_SESSIONS, address)
    return revoked


# --- helpers ---------------------------------------------------------------------------------


def _require(session: Session | None, stage: str) -> Session:
    if session is None or session.stage != stage or session.mailbox is None:
        raise StageRefused(f"this step needs a user's session at the {stage} stage")
    return session


def _first_stage(*, confirmed: bool, mfa_required: bool) -> str:
    """A code is due if a factor is in force; else its enrolment if one is required."""
    if confirmed:
        return sessions.PASSWORD
    return sessions.ENROL if mfa_required else sessions.FULL


def _enrolling_owner(executor: Executor, session: Session) -> mfa.Owner:
    if session.mailbox is None or session.stage not in (sessions.ENROL, sessions.FULL):
        raise StageRefused("this step needs a user's session at the enrol or full stage")
    owner = mfa.Owner.mailbox(session.mailbox)
    if session.stage == sessions.FULL and mfa.status(executor, owner).confirmed:
        raise SignInRefused("a second factor is in force already; turn it off first")
    return owner


def _code_accepted(
    executor: Executor, guard: Guard, attempt: Attempt, key: bytes, session: Session, code: str,
    now: float,
) -> bool:  # fmt: skip
    if attempt.verdict.refused is not None:
        raise Banned(attempt.verdict.refused)
    owner = mfa.Owner.mailbox(mailbox_of(session))
    try:
        accepted = mfa.check(executor, owner, key, code, now).accepted
    except mfa.CodeRefused:
        accepted = False
    except UsageError as malformed:
        guard.report(attempt.client, attempt.login, code, success=False)
        raise SignInRefused(malformed.message) from None
    guard.report(attempt.client, attempt.login, code, success=accepted)
    return accepted


def _stored_hash(executor: Executor, login: str) -> tuple[str | None, str | None]:
    """(address, hash) of an active mailbox; (None, None) for anything else, which then
    costs the stand-in hash's verification."""
    try:
        address = names.mailbox(login.strip()).lower()
    except (ValueError, UsageError):
        return None, None
    rows = psql.query(executor, _MAILBOX, {"address": address})
    found = [row[1] for row in rows if len(row) > 1 and row[0] == "mailbox"]
    return (address, found[0]) if found else (None, None)
