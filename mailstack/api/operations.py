"""The REST API's operations (/api/v1), free of any web framework: the admin service's app
(compose/admin/adminapi.py, FastAPI) parses a request, calls one function here and sends
back what it returns or the ApiError it raises. The rules are the core's own (names,
passwords, tokens, directory); only the mapping of their refusals to HTTP lives here.

Status codes: 400 bad input (the CLI's one line), 401 no token or one that grants nothing
(unknown, expired and revoked alike, one body; so is a token whose administrator is gone
or inactive), 403 a token without the scope or a principal naming a domain it does not
manage (identity.principal), 404 what the input names does not exist, 409 it exists
already or is still in use.

Every operation takes the caller's principal: the input is checked by the CLI's rules first
(a hostile value gets the CLI's line, whoever asks), then the principal decides, before the
database is asked, so a domain administrator's 403 says the same whether the other domain
exists or not. This module has the mailboxes; api.domains the domains and aliases,
api.apitokens the tokens.

Loaded by the admin service on Debian's own Python: it imports nothing of pydantic, typer
or rich (a unit test checks).
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mailstack.accounts import directory, names, passwords, usage
from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import (
    AlreadyExists,
    Forbidden,
    InUse,
    MailstackError,
    NotFound,
    UsageError,
)
from mailstack.identity import principal, tokens
from mailstack.identity.principal import Principal
from mailstack.runtime import jobqueue
from mailstack.units import parse_size

# One body for every 401: a client never learns whether a token exists, expired or was
# revoked (tokens.TokenRefused says which, for the audit log only).
UNAUTHORIZED = "a valid API token is needed: send 'Authorization: Bearer <token>'"
BEARER = "bearer"
# One password hash at a time (the web sign-in's verifications too): each takes 32 MiB
# (passwords.MEMORY_KIB) and the admin container has 96 MiB; concurrent requests wait here
# instead of running it out of memory.
HASHING = threading.BoundedSemaphore(1)


class ApiError(Exception):
    """A refusal: its HTTP status and the one line of its JSON body {"error": ...}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, str]:
        return {"error": self.message}


def status_of(error: MailstackError) -> int:
    """The HTTP status of a refusal of the core."""
    if isinstance(error, tokens.TokenRefused):
        return 401
    if isinstance(error, Forbidden):
        return 403
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, AlreadyExists | InUse):
        return 409
    if isinstance(error, UsageError):
        return 400
    return 500


def refusal(error: MailstackError) -> ApiError:
    status = status_of(error)
    if status == 401:
        return ApiError(401, UNAUTHORIZED)
    if status == 500:  # the core's own failure: its line names no secret, but no detail
        return ApiError(500, "the request could not be completed; see the admin service's log")
    return ApiError(status, error.message)


def authorize(
    executor: Executor, authorization: str | None, needed: str, now: datetime.datetime
) -> tokens.TokenIdentity:
    """The token's identity when it grants `needed`; ApiError 401 or 403 otherwise."""
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if scheme.lower() != BEARER or not presented.strip():
        raise ApiError(401, UNAUTHORIZED)
    try:
        identity = tokens.authenticate(executor, presented.strip(), now)
    except tokens.TokenRefused:
        raise ApiError(401, UNAUTHORIZED) from None
    if not identity.allows(needed):
        raise ApiError(
            403,
            f"API token {identity.name} lacks the scope {needed} "
            f"(it has {', '.join(identity.scopes)})",
        )
    return identity


@dataclass(frozen=True)
class Caller:
    """Who a request acts as: its token, and the principal the token acts for."""

    identity: tokens.TokenIdentity
    principal: Principal


def authorize_caller(
    executor: Executor, authorization: str | None, needed: str, now: datetime.datetime
) -> Caller:
    """authorize, then the principal the token acts for (its creator, read now); a token
    whose administrator is gone or inactive grants nothing: the same 401."""
    identity = authorize(executor, authorization, needed, now)
    try:
        acting = principal.for_token(executor, identity.name, identity.created_by)
    except principal.InactiveAdmin:
        raise ApiError(401, UNAUTHORIZED) from None
    except MailstackError as error:
        raise refusal(error) from None
    return Caller(identity, acting)


@contextmanager
def refusals() -> Iterator[None]:
    """The core's refusals inside the block as ApiErrors (status and one line)."""
    try:
        yield
    except MailstackError as error:
        raise refusal(error) from None


def checked(kind: str, rule: Callable[[str], str], value: str) -> str:
    """A value by the CLI's rule (names), or its one line as a 400."""
    with refusals():
        return names.require(kind, rule, value)


def actor(identity: tokens.TokenIdentity, client: str | None) -> psql.Actor:
    """Who the audit log names for a request: the token, from the client's address (the
    front's X-Real-IP, which uvicorn trusts from the front alone)."""
    return psql.Actor.from_client(f"token:{identity.name}", client)


def list_mailboxes(executor: Executor, caller: Principal, domain: str | None) -> dict[str, Any]:
    """GET /api/v1/mailboxes[?domain=D] (scope read): a domain administrator's list is cut to
    its domains; naming another domain is a 403. used_bytes and messages are Dovecot's
    (quota_clone, mailstack.accounts.usage); null until it recorded a first change."""
    with refusals():
        only = names.require("DOMAIN", names.domain, domain) if domain is not None else None
        if only is not None:
            caller.require_domain(only)
        listed = directory.list_mailboxes(executor, only)
        mailboxes = usage.with_usage(executor, [m for m in listed if caller.may_manage(m.domain)])
    return {"mailboxes": [_mailbox(m) for m in mailboxes]}


def create_mailbox(
    executor: Executor,
    caller: Principal,
    address: str,
    password: str,
    quota: str | None,
    default_quota: str,
) -> dict[str, Any]:
    """POST /api/v1/mailboxes (scope accounts): the CLI's checks, in the CLI's order
    (address, quota, password), then the core's add_mailbox (within the domain's quota,
    which an explicit quota or the stack's default must fit); the hash is made here."""
    with refusals():
        mailbox = names.require("ADDRESS", names.mailbox, address)
        caller.require_address(mailbox)
        quota_bytes = _size("quota", quota if quota is not None else default_quota)
        password_hash = _hash(password)
        directory.add_mailbox(
            executor, mailbox, password_hash, quota_bytes, default_quota=quota is None
        )
    return {"address": mailbox, "domain": mailbox.rpartition("@")[2], "quota_bytes": quota_bytes}


def remove_mailbox(executor: Executor, caller: Principal, address: str) -> dict[str, Any]:
    """DELETE /api/v1/mailboxes/{address} (scope accounts): as `mailbox remove` without
    --purge, the stored mail is kept. Its aliases go with it (the core's rule); its open IMAP
    sessions are ended by the host (a queued sessions.kick job)."""
    with refusals():
        mailbox = names.require("ADDRESS", names.address, address).lower()
        caller.require_address(mailbox)
        removal = directory.remove_mailbox(executor, mailbox, kick=False)
        jobqueue.queue(executor, jobqueue.KICK_SESSIONS, mailbox)
    return {
        "address": removal.address,
        "removed_aliases": list(removal.aliases),
        "stored_mail": f"kept in {removal.mail_path}",
    }


def change_mailbox(
    executor: Executor,
    caller: Principal,
    address: str,
    password: str | None,
    quota: str | None,
) -> dict[str, Any]:
    """PATCH /api/v1/mailboxes/{address} (scope accounts): a new password (the CLI's
    strength rule) and/or quota (the core's bounds); every value is checked before either
    is written."""
    with refusals():
        mailbox = names.require("ADDRESS", names.address, address).lower()
        if password is None and quota is None:
            raise UsageError("give password or quota (or both); nothing was changed")
        caller.require_address(mailbox)
        quota_bytes = _size("quota", quota) if quota is not None else None
        password_hash = _hash(password) if password is not None else None
        if password_hash is not None:
            # Sessions begun with the old password end: the web's by the database (0014),
            # IMAP's by the host.
            directory.set_mailbox_password(executor, mailbox, password_hash)
            jobqueue.queue(executor, jobqueue.KICK_SESSIONS, mailbox)
        quota_change = (
            directory.set_mailbox_quota(executor, mailbox, quota_bytes)
            if quota_bytes is not None
            else None
        )
    return {
        "address": mailbox,
        "password_changed": password_hash is not None,
        "quota_bytes": quota_change.new_bytes if quota_change else None,
    }


def _hash(password: str) -> str:
    passwords.check_password_strength(password)
    with HASHING:
        return passwords.hash_password(password)


def _size(name: str, text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as reason:
        raise UsageError(f"{name}: {text[:80]!r} {reason}") from None


def _mailbox(mailbox: directory.Mailbox) -> dict[str, Any]:
    return {
        "address": mailbox.address,
        "domain": mailbox.domain,
        "quota_bytes": mailbox.quota_bytes,
        "used_bytes": mailbox.storage_bytes,
        "messages": mailbox.messages,
        "active": mailbox.active,
        "created": mailbox.created,
    }
