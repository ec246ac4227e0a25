"""Passkeys in the admin service's web sign-in, free of any web framework: an
administrator's second factor may be a passkey instead of a TOTP code, and a signed-in
administrator registers and removes passkeys (mailstack.identity.passkeys does the
ceremonies; compose/admin/webpasskeys.py only renders and parses).

Each ceremony's state is held by the web session that began it and taken by the step that
finishes it (sessions.hold_ceremony / take_ceremony), so one challenge is answered once and
only in the session that asked for it. Proving a passkey is counted by the bans service like
a code: a refused answer is a failure from the client's address.

Registering is a sensitive action: the password must have been typed within the last five
minutes (signin.require_recent_password), so a session left open on somebody's screen
cannot add a way in.

Loaded by the admin service on Debian's own Python: no pydantic, typer or rich.
"""

from __future__ import annotations

from mailstack.adapters.psql import Executor
from mailstack.api import signin
from mailstack.api.signin import Attempt, Guard, SignInRefused
from mailstack.errors import MailstackError
from mailstack.identity import passkeys, sessions
from mailstack.identity.mfa import Owner
from mailstack.identity.passkeys import Ceremony, Passkey
from mailstack.identity.sessions import Session

NO_CEREMONY = "The passkey request expired or was answered already; start again."
# What bansd is told was tried: a passkey has no typed secret, so one marker per attempt
# kind keeps repeated answers of one kind from counting as many different passwords.
_PASSKEY_ATTEMPT = "passkey"


def offer(executor: Executor, session: Session, hostname: str) -> Ceremony:
    """The options to sign in with a passkey at the code step (NotFound: none registered);
    the ceremony is held by the session."""
    signin.require_stage(session, sessions.PASSWORD)
    ceremony = passkeys.begin_authentication(executor, _owner(session), hostname)
    sessions.hold_ceremony(executor, session, ceremony.state)
    return ceremony


def prove(
    executor: Executor, guard: Guard, attempt: Attempt, session: Session, hostname: str,
    answer: str,
) -> Session:  # fmt: skip
    """The browser's answer at the code step: the session becomes full under a new id, or
    SignInRefused with one line (counted by the bans service)."""
    signin.require_stage(session, sessions.PASSWORD)
    if attempt.verdict.refused is not None:
        raise signin.Banned(attempt.verdict.refused)
    state = sessions.take_ceremony(executor, session)
    if state is None:
        raise SignInRefused(NO_CEREMONY)
    try:
        passkeys.finish_authentication(executor, _owner(session), hostname, state, answer)
    except passkeys.PasskeyRefused as refused:
        guard.report(attempt.client, attempt.login, _PASSKEY_ATTEMPT, success=False)
        raise SignInRefused(refused.message) from None
    guard.report(attempt.client, attempt.login, _PASSKEY_ATTEMPT, success=True)
    return sessions.advance(executor, session, sessions.FULL)


def listed(executor: Executor, session: Session) -> list[Passkey]:
    signin.require_stage(session, sessions.FULL)
    return passkeys.list_passkeys(executor, _owner(session))


def begin_registration(executor: Executor, session: Session, hostname: str) -> Ceremony:
    """The options to register a new passkey, after a recent password (ReauthNeeded)."""
    signin.require_recent_password(session)
    ceremony = passkeys.begin_registration(executor, _owner(session), hostname)
    sessions.hold_ceremony(executor, session, ceremony.state)
    return ceremony


def finish_registration(
    executor: Executor, session: Session, hostname: str, name: str, answer: str
) -> passkeys.Registered:
    """Store the passkey the browser made; the name is checked before anything is kept."""
    signin.require_recent_password(session)
    state = sessions.take_ceremony(executor, session)
    if state is None:
        raise MailstackError(NO_CEREMONY)
    return passkeys.finish_registration(executor, _owner(session), hostname, name, state, answer)


def remove(executor: Executor, session: Session, name: str) -> None:
    signin.require_stage(session, sessions.FULL)
    passkeys.remove_passkey(executor, _owner(session), name)


def _owner(session: Session) -> Owner:
    if session.admin is None:
        raise signin.StageRefused("passkeys are for administrators' sign-in")
    return Owner.admin(session.admin)
