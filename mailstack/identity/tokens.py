"""API tokens: the bearer tokens of the REST API (/api/v1), made by `mailstack api token create`.

A token is `msk_` and 43 characters of `secrets.token_urlsafe(32)` (256 bits from the CSPRNG),
shown once; the database keeps only its SHA-256 (hex), which reaches psql on stdin like a
password hash (mailstack.accounts.access), never in a command line. A token has a name (the
rule of app password names), scopes, an optional expiry and, once revoked, stays listed as
revoked: its name is never reused, so the audit log's `token:NAME` keeps meaning one token.

Scopes. An API operation needs one scope; a token grants the scopes it was given plus what
they imply:

    read      every reading operation (lists, records, checks, health)
    accounts  read, and changing mailboxes, aliases, app passwords, sender grants, quotas
    domains   read, and changing domains, alias domains, DKIM keys
    admin     everything: the above, and administrators, API tokens, bans, the mail queue,
              backups, the audit log

`accounts` and `domains` each imply `read` (a change needs to see what it changes), but not
each other: a script that provisions mailboxes need not be able to remove a domain, and one
that adds domains need not set passwords; give both scopes to a token that does both. Only
`admin` implies everything. Scopes only narrow: a token acts for the administrator who made
it (`created_by`; none: root on the host), and the API applies that administrator's role too.

Refusals: an unknown, expired or revoked token raises UnknownToken, ExpiredToken or
RevokedToken (all TokenRefused). The API answers each with the same 401, so a client never
learns which; the distinction is for the audit log.

This module is loaded by the admin service on Debian's own Python: it imports nothing of
pydantic, typer or rich (so not mailstack.accounts.names either, whose rules need pydantic).
"""

from __future__ import annotations

import datetime
import hashlib
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mailstack.accounts import names
from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import AlreadyExists, MailstackError, NotFound, UsageError
from mailstack.units import format_duration, parse_duration

SCOPES = ("read", "accounts", "domains", "admin")
# What each scope grants (the rule of the module docstring).
GRANTS: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "accounts": frozenset({"accounts", "read"}),
    "domains": frozenset({"domains", "read"}),
    "admin": frozenset(SCOPES),
}
# A prefix, not a secret: it tells a leaked token apart in logs and to secret scanners.
TOKEN_PREFIX = "msk_"  # noqa: S105
TOKEN = re.compile(r"msk_[A-Za-z0-9_-]{43}")  # the prefix and token_urlsafe(32)
# The rule of app password names (mailstack.accounts.names) and of the api_tokens CHECK.
MAX_EXPIRY = 3650 * 86400  # ten years; leave --expires out for a token that does not expire


class TokenRefused(MailstackError):
    """A presented token that grants nothing. `reason` and `name` are for the audit log; the
    API answers every kind with the same 401 and never says which."""

    reason = "refused"

    def __init__(self, name: str | None = None) -> None:
        # Never the presented token itself: this message may be logged.
        what = f"API token {name}" if name else "an API token"
        super().__init__(f"{what} was refused: {self.reason}")
        self.name = name


class UnknownToken(TokenRefused):
    reason = "unknown"


class ExpiredToken(TokenRefused):
    reason = "expired"


class RevokedToken(TokenRefused):
    reason = "revoked"


@dataclass(frozen=True)
class NewApiToken:
    """The one time a token is shown."""

    name: str
    scopes: tuple[str, ...]
    expires: str | None  # UTC, ISO 8601; None: never
    token: str

    def __str__(self) -> str:
        return (
            f"API token {self.name} (scopes {', '.join(self.scopes)}; expires "
            f"{self.expires or 'never'}): {self.token}\n"
            "send it as 'Authorization: Bearer <token>'; it is shown only now, "
            f"revoke it with: mailstack api token revoke {self.name}"
        )


@dataclass(frozen=True)
class ApiToken:
    """A stored token as listed: never its secret, never its hash."""

    name: str
    scopes: tuple[str, ...]
    state: str  # active, expired or revoked
    created: str
    expires: str | None
    revoked: str | None
    last_used: str | None
    created_by: str | None  # the administrator; None: root on the host

    def __str__(self) -> str:
        state = f"revoked {self.revoked}" if self.revoked else self.state
        return (
            f"{self.name}  {','.join(self.scopes)}  {state}  created {self.created} by "
            f"{self.created_by or 'root'}  expires {self.expires or 'never'}  "
            f"last used {self.last_used or 'never'}"
        )


@dataclass(frozen=True)
class TokenRevoked:
    name: str
    revoked: str
    already: bool = False  # it was revoked before: nothing changed

    def __str__(self) -> str:
        if self.already:
            return f"API token {self.name} was already revoked at {self.revoked}"
        return f"revoked API token {self.name}; the API refuses it from now on"


@dataclass(frozen=True)
class TokenIdentity:
    """Who a request with a valid token acts as."""

    name: str
    scopes: tuple[str, ...]
    created_by: str | None  # None: root on the host

    def allows(self, needed: str) -> bool:
        return allows(self.scopes, needed)


# --- rules -----------------------------------------------------------------------------------


def allows(scopes: Iterable[str], needed: str) -> bool:
    """Whether a token with these scopes may do an operation that needs `needed`."""
    if needed not in GRANTS:
        raise ValueError(f"not a scope: {needed!r}")  # a route declared with a typo
    return any(needed in GRANTS.get(scope, ()) for scope in scopes)


def check_name(name: str) -> str:
    return names.require("NAME", names.token_name, name)


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes given, each once, in the order of SCOPES; at least one."""
    given = list(scopes)
    for scope in given:
        if scope not in GRANTS:
            raise UsageError(f"--scope: {scope[:80]!r} is not a scope: one of {', '.join(SCOPES)}")
    if not given:
        raise UsageError(f"--scope: none given: give at least one of {', '.join(SCOPES)}")
    return tuple(scope for scope in SCOPES if scope in given)


def check_expiry(expires: str | None) -> int | None:
    """Seconds from now until the token expires (from '90d', '12h', ...); None: never."""
    if expires is None:
        return None
    never = "leave --expires out for a token that does not expire"
    try:
        seconds = parse_duration(expires)
    except ValueError as reason:
        raise UsageError(f"--expires: {expires[:80]!r} {reason}; {never}") from None
    if seconds <= 0:
        raise UsageError(f"--expires: {expires[:80]!r} is not accepted: at least 1s; {never}")
    if seconds > MAX_EXPIRY:
        raise UsageError(
            f"--expires: {expires[:80]!r} is longer than {format_duration(MAX_EXPIRY)} "
            f"(ten years); {never}"
        )
    return seconds


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the database keeps of a token: SHA-256, hex. A plain hash is enough here (no
    salt, no Argon2): the token is 256 random bits, not a password a person chose."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- the database ----------------------------------------------------------------------------


# Timestamps as UTC ISO 8601 (to_char(... AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')).
_CREATE = """
WITH creator AS (
    SELECT 1 WHERE :'created_by' = ''
    OR EXISTS (SELECT 1 FROM admins WHERE name = :'created_by')
),
added AS (
    INSERT INTO api_tokens (name, token_hash, scopes, created_by, expires)
    SELECT :'name', :'token_hash', string_to_array(:'scopes', ','), NULLIF(:'created_by', ''),
        -- No expiry: '' becomes NULL, and so does the sum.
        now() + CAST(NULLIF(:'expires_seconds', '') AS integer) * interval '1 second'
    FROM creator
    ON CONFLICT DO NOTHING
    RETURNING expires
)
SELECT 'creator', CAST(count(*) AS text) FROM creator
UNION ALL SELECT 'name_taken', CAST(count(*) AS text) FROM api_tokens WHERE name = :'name'
UNION ALL SELECT 'added', coalesce(
    to_char(expires AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), 'never') FROM added;
"""

_REVOKE = """
WITH token AS (SELECT id, revoked FROM api_tokens WHERE name = :'name'),
done AS (
    UPDATE api_tokens SET revoked = now()
    WHERE id IN (SELECT id FROM token WHERE revoked IS NULL)
    RETURNING revoked
)
SELECT 'before', coalesce(
    to_char(revoked AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), '') FROM token
UNION ALL SELECT 'now', to_char(revoked AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
FROM done;
"""

# A token's state at :'now': decided here only, for the list and for authenticate.
_STATE = (
    "CASE WHEN revoked IS NOT NULL THEN 'revoked' "
    "WHEN expires <= CAST(:'now' AS timestamptz) THEN 'expired' ELSE 'active' END"
)

# Composed at import from the constant _STATE; every value is still a psql variable.
_LIST = f"""
SELECT name, array_to_string(scopes, ','), {_STATE},
    to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    to_char(expires AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    to_char(revoked AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    to_char(last_used AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    coalesce(created_by, '')
FROM api_tokens ORDER BY created, name;
"""  # noqa: S608  # constant fragments only (above)

# The last_used update runs whether or not the outer SELECT reads it (a data-modifying WITH
# always runs once), and only for an active token.
_AUTHENTICATE = f"""
WITH token AS (
    SELECT id, name, scopes, created_by, {_STATE} AS state
    FROM api_tokens WHERE token_hash = :'token_hash'
),
used AS (
    UPDATE api_tokens SET last_used = CAST(:'now' AS timestamptz)
    WHERE id IN (SELECT id FROM token WHERE state = 'active')
    RETURNING id
)
SELECT name, array_to_string(scopes, ','), coalesce(created_by, ''), state FROM token;
"""  # noqa: S608  # constant fragments only (above)


def create_token(
    executor: Executor,
    name: str,
    scopes: Iterable[str],
    expires: str | None = None,
    *,
    created_by: str | None = None,
) -> NewApiToken:
    """Make and store (hashed) a new token; the result is the only time it is shown."""
    check_name(name)
    granted = check_scopes(scopes)
    seconds = check_expiry(expires)
    for _attempt in range(3):  # a hash already stored (never in practice): draw again
        token = generate_token()
        rows = psql.query(
            executor,
            _CREATE,
            {
                "name": name,
                "scopes": ",".join(granted),
                "created_by": created_by or "",
                "expires_seconds": "" if seconds is None else str(seconds),
            },
            prelude=psql.set_secret_variable("token_hash", token_hash(token)),
        )
        answer = _labelled(rows)
        if answer.get("creator") == "0":
            raise UsageError(f"administrator {created_by} does not exist")
        if answer.get("name_taken", "0") != "0":
            raise AlreadyExists(
                f"NAME: an API token named {name} exists already",
                hint="choose another name (a revoked token keeps its name, so the audit log "
                "names one token); see mailstack api token list",
            )
        if "added" in answer:
            stored = answer["added"]
            return NewApiToken(name, granted, None if stored == "never" else stored, token)
    raise MailstackError(f"could not store the new API token {name}; try again")


def list_tokens(executor: Executor, now: datetime.datetime) -> list[ApiToken]:
    """Every token, revoked ones too, with its state at `now`."""
    rows = psql.query(executor, _LIST, {"now": _timestamp(now)})
    try:
        return [
            ApiToken(
                name=row[0],
                scopes=tuple(row[1].split(",")),
                state=row[2],
                created=row[3],
                expires=row[4] or None,
                revoked=row[5] or None,
                last_used=row[6] or None,
                created_by=row[7] or None,
            )
            for row in rows
        ]
    except IndexError:
        raise MailstackError("unexpected answer from the database") from None


def revoke_token(executor: Executor, name: str) -> TokenRevoked:
    """Revoke a token for good; it stays listed as revoked."""
    check_name(name)
    answer = _labelled(psql.query(executor, _REVOKE, {"name": name}))
    if "before" not in answer:
        raise NotFound(
            f"NAME: there is no API token named {name}", hint="see mailstack api token list"
        )
    if "now" in answer:
        return TokenRevoked(name, answer["now"])
    return TokenRevoked(name, answer["before"], already=True)


def authenticate(executor: Executor, presented_token: str, now: datetime.datetime) -> TokenIdentity:
    """Who a presented bearer token acts as, recording its use; TokenRefused when it grants
    nothing (UnknownToken, ExpiredToken, RevokedToken)."""
    # A malformed token cannot be one of ours: refused without asking the database. What this
    # reveals through timing is the token's shape, which the client knows already.
    if not TOKEN.fullmatch(presented_token):
        raise UnknownToken()
    # Timing: the database never compares the presented token, only its SHA-256, and finds it
    # through the unique index on token_hash. How long that lookup takes can at most tell how
    # many leading digits of the presented token's hash match a stored hash. A client cannot
    # choose those digits (that needs SHA-256 preimages) to extend a match digit by digit, and
    # even a stored hash learnt whole is not a token. Comparing tokens themselves would need
    # hmac.compare_digest; the lookup by hash needs no constant-time comparison.
    rows = psql.query(
        executor,
        _AUTHENTICATE,
        {"now": _timestamp(now)},
        prelude=psql.set_secret_variable("token_hash", token_hash(presented_token)),
    )
    if not rows:
        raise UnknownToken()
    try:
        name, scopes, created_by, state = rows[0]
    except ValueError:
        raise MailstackError("unexpected answer from the database") from None
    if state == "revoked":
        raise RevokedToken(name)
    if state == "expired":
        raise ExpiredToken(name)
    if state != "active":
        raise MailstackError("unexpected answer from the database")
    return TokenIdentity(name, tuple(scopes.split(",")), created_by or None)


def _timestamp(now: datetime.datetime) -> str:
    if now.tzinfo is None:
        raise ValueError("now must carry its time zone")  # a naive time is a bug, not input
    return now.isoformat()


def _labelled(rows: Sequence[Sequence[str]]) -> dict[str, str]:
    """Rows of ('label', value) as {label: value}."""
    try:
        return {row[0]: row[1] for row in rows}
    except IndexError:
        raise MailstackError("unexpected answer from the database") from None
