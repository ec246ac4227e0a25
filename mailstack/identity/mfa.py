"""A second factor in the database: enrol, confirm, check and disable one TOTP secret per
account (an administrator's or a mailbox's), with its recovery codes (tables mfa_totp and
mfa_recovery_codes, migration 0003).

The secret is stored sealed (mailstack.identity.sealing) for its owner; recovery codes only as
SHA-256 hex (mailstack.identity.recovery). Everything goes through psql
(mailstack.adapters.psql): constant SQL, every value a psql variable, and the sealed secret
and code hashes set on stdin (`\\set`), never on a command line.

A code is accepted at most once: `check` verifies it in Python, then stores its time step
with an UPDATE whose WHERE demands `last_step < step`. Two requests with the same code both
verify, but PostgreSQL takes the row lock for the first UPDATE; the second waits, re-reads
the row (READ COMMITTED re-checks the WHERE on the new version) and updates nothing, so it
is refused. A recovery code is a DELETE of its hash: only one DELETE gets the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mailstack.accounts import names
from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import MailstackError, UsageError
from mailstack.identity import recovery, sealing, totp

_CODE_SHAPE = f"{totp.DIGITS} digits, or a recovery code (xxxx-xxxx-xxxx-xxxx)"


@dataclass(frozen=True)
class Owner:
    """Whose second factor: an administrator (by name) or a mailbox (by address)."""

    kind: Literal["admin", "mailbox"]
    name: str

    @classmethod
    def admin(cls, name: str) -> Owner:
        return cls("admin", names.require("ADMIN", names.admin_name, name))

    @classmethod
    def mailbox(cls, address: str) -> Owner:
        return cls("mailbox", names.require("MAILBOX", names.mailbox, address))

    @property
    def label(self) -> str:
        """`admin:NAME` or `mailbox:ADDRESS`: what a sealed secret is bound to (and the
        audit log's actor)."""
        return f"{self.kind}:{self.name}"

    def __str__(self) -> str:
        return f"administrator {self.name}" if self.kind == "admin" else f"mailbox {self.name}"

    def variables(self) -> dict[str, str]:
        return {"kind": self.kind, "owner": self.name}


@dataclass(frozen=True)
class Enrolment:
    """The one time a new secret is shown (as text to type and as the URI a QR code holds)."""

    owner: str
    secret: str
    uri: str

    def __str__(self) -> str:
        return (
            f"TOTP secret for {self.owner}: {self.secret}\n"
            f"authenticator app URI: {self.uri}\n"
            "shown only now; it takes effect once a first code from the app is confirmed"
        )


@dataclass(frozen=True)
class RecoveryCodes:
    """The one time the recovery codes of a confirmed enrolment are shown."""

    owner: str
    codes: tuple[str, ...]

    def __str__(self) -> str:
        return "\n".join(
            [f"second factor of {self.owner} confirmed; recovery codes (each works once, "
             "shown only now, keep them apart from the phone):", *self.codes]
        )  # fmt: skip


@dataclass(frozen=True)
class MfaCheck:
    owner: str
    accepted: bool
    method: Literal["totp", "recovery", ""]  # what was accepted; "" when refused
    recovery_codes_left: int | None = None  # after a recovery code

    def __str__(self) -> str:
        if not self.accepted:
            return f"refused: the code is not valid for {self.owner} (or was used already)"
        if self.method == "recovery":
            return f"accepted a recovery code of {self.owner}; {self.recovery_codes_left} left"
        return f"accepted a TOTP code of {self.owner}"


@dataclass(frozen=True)
class MfaStatus:
    owner: str
    enrolled: bool  # a secret exists (perhaps not confirmed yet)
    confirmed: bool  # the second factor is in force
    recovery_codes_left: int

    def __str__(self) -> str:
        if self.confirmed:
            return f"{self.owner}: TOTP on, {self.recovery_codes_left} recovery code(s) left"
        if self.enrolled:
            return f"{self.owner}: TOTP enrolled, waiting for a first code"
        return f"{self.owner}: no second factor"


@dataclass(frozen=True)
class MfaDisabled:
    owner: str
    was_confirmed: bool

    def __str__(self) -> str:
        what = "second factor" if self.was_confirmed else "unconfirmed TOTP enrolment"
        return f"removed the {what} of {self.owner} and its recovery codes"


class CodeRefused(UsageError):
    """A well-formed code that does not verify (confirming an enrolment)."""


@dataclass(frozen=True)
class _Row:
    id: str
    sealed: str
    confirmed: bool
    last_step: int
    recovery_codes: int


# Every statement finds the owner's row with the same condition on two psql variables, kind
# and owner; they are literals to the planner, so it keeps one branch and its unique index.
# Each script starts with the account's own row, so "no such account" is told apart.
_READ = """
SELECT 'account', count(*) FROM (
    SELECT name FROM admins WHERE :'kind' = 'admin' AND name = :'owner'
    UNION ALL SELECT address FROM mailboxes WHERE :'kind' = 'mailbox' AND address = :'owner'
) AS account;
SELECT 'totp', t.id, t.sealed, t.confirmed IS NOT NULL, t.last_step,
    (SELECT count(*) FROM mfa_recovery_codes r WHERE r.totp = t.id)
FROM mfa_totp t
WHERE ((:'kind' = 'admin' AND admin = :'owner') OR (:'kind' = 'mailbox' AND mailbox = :'owner'));
"""

# A new secret replaces an unconfirmed one in place (ON CONFLICT ... WHERE confirmed IS NULL)
# and leaves a confirmed one alone: no row comes back, and the caller refuses. One INSERT per
# column, because ON CONFLICT names the unique column; the other finds no account row.
_ENROL = """
SELECT 'account', count(*) FROM (
    SELECT name FROM admins WHERE :'kind' = 'admin' AND name = :'owner'
    UNION ALL SELECT address FROM mailboxes WHERE :'kind' = 'mailbox' AND address = :'owner'
) AS account;
INSERT INTO mfa_totp (admin, sealed)
    SELECT name, :'sealed' FROM admins WHERE :'kind' = 'admin' AND name = :'owner'
    ON CONFLICT (admin) DO UPDATE SET sealed = excluded.sealed, last_step = 0, created = now()
    WHERE mfa_totp.confirmed IS NULL
    RETURNING 'enrolled', id;
INSERT INTO mfa_totp (mailbox, sealed)
    SELECT address, :'sealed' FROM mailboxes WHERE :'kind' = 'mailbox' AND address = :'owner'
    ON CONFLICT (mailbox) DO UPDATE SET sealed = excluded.sealed, last_step = 0, created = now()
    WHERE mfa_totp.confirmed IS NULL
    RETURNING 'enrolled', id;
"""

# Confirmed only if the row still holds the secret that was verified (no parallel enrolment
# replaced it) and the step is new; the recovery codes go in with it or not at all.
_CODE_VARIABLES = tuple(f"code_hash_{i}" for i in range(recovery.COUNT))
_CONFIRM = """
WITH confirmed AS (
    UPDATE mfa_totp SET confirmed = now(), last_step = CAST(:'step' AS bigint)
    WHERE id = CAST(:'id' AS bigint)
        AND ((:'kind' = 'admin' AND admin = :'owner')
            OR (:'kind' = 'mailbox' AND mailbox = :'owner'))
        AND sealed = :'sealed' AND confirmed IS NULL AND last_step < CAST(:'step' AS bigint)
    RETURNING id
),
codes AS (
    INSERT INTO mfa_recovery_codes (totp, code_hash)
    SELECT confirmed.id, code_hash FROM confirmed, unnest(ARRAY[
        :'code_hash_0', :'code_hash_1', :'code_hash_2', :'code_hash_3', :'code_hash_4',
        :'code_hash_5', :'code_hash_6', :'code_hash_7', :'code_hash_8', :'code_hash_9'
    ]) AS code_hash
    RETURNING code_hash
)
SELECT 'confirmed', count(*) FROM confirmed
UNION ALL SELECT 'codes', count(*) FROM codes;
"""

# The replay guard. `last_step < step` is evaluated again on the row as it is once its lock is
# granted (READ COMMITTED re-checks an UPDATE's WHERE on the newest version), so of two
# parallel uses of one code the second updates nothing.
_USE_STEP = """
UPDATE mfa_totp SET last_step = CAST(:'step' AS bigint)
WHERE id = CAST(:'id' AS bigint)
    AND ((:'kind' = 'admin' AND admin = :'owner') OR (:'kind' = 'mailbox' AND mailbox = :'owner'))
    AND sealed = :'sealed' AND confirmed IS NOT NULL AND last_step < CAST(:'step' AS bigint)
RETURNING 'accepted', last_step;
"""

# A recovery code is spent by deleting it: of two parallel DELETEs only one gets the row.
# `left` is counted in the statement's snapshot, before the DELETE: the caller subtracts.
_USE_RECOVERY = """
WITH owner_totp AS (
    SELECT id FROM mfa_totp
    WHERE ((:'kind' = 'admin' AND admin = :'owner')
        OR (:'kind' = 'mailbox' AND mailbox = :'owner'))
        AND confirmed IS NOT NULL
),
used AS (
    DELETE FROM mfa_recovery_codes
    WHERE totp IN (SELECT id FROM owner_totp) AND code_hash = :'code_hash'
    RETURNING code_hash
)
SELECT 'used', count(*) FROM used
UNION ALL SELECT 'left', count(*) FROM mfa_recovery_codes
    WHERE totp IN (SELECT id FROM owner_totp);
"""

# The recovery codes go with the row (ON DELETE CASCADE).
_DISABLE = """
SELECT 'account', count(*) FROM (
    SELECT name FROM admins WHERE :'kind' = 'admin' AND name = :'owner'
    UNION ALL SELECT address FROM mailboxes WHERE :'kind' = 'mailbox' AND address = :'owner'
) AS account;
DELETE FROM mfa_totp
WHERE ((:'kind' = 'admin' AND admin = :'owner') OR (:'kind' = 'mailbox' AND mailbox = :'owner'))
RETURNING 'removed', confirmed IS NOT NULL;
"""


def status(executor: Executor, owner: Owner) -> MfaStatus:
    """Whether the owner has a second factor, and how many recovery codes are left."""
    row = _read(executor, owner)
    if row is None:
        return MfaStatus(str(owner), enrolled=False, confirmed=False, recovery_codes_left=0)
    return MfaStatus(str(owner), True, row.confirmed, row.recovery_codes)


def enrol(executor: Executor, owner: Owner, key: bytes, *, issuer: str) -> Enrolment:
    """A new, unconfirmed secret for the owner (replacing an unconfirmed one), stored sealed;
    refused while a confirmed one exists. `issuer` is what the app shows above the code
    (the stack's hostname)."""
    secret = totp.new_secret()
    try:
        uri = totp.provisioning_uri(secret, owner.name, issuer)
    except ValueError as reason:
        raise UsageError(f"ISSUER: {issuer[:80]!r}: {reason}") from None
    rows = psql.query(
        executor,
        _ENROL,
        owner.variables(),
        prelude=psql.set_secret_variable("sealed", sealing.seal(key, secret, owner.label)),
        single_transaction=True,
    )
    _require_account(rows, owner)
    if not any(row[0] == "enrolled" for row in rows):
        raise UsageError(
            f"{owner} already has a confirmed second factor",
            hint="disable it first (with a code from the app, or an administrator's reset)",
        )
    return Enrolment(str(owner), secret, uri)


def pending(executor: Executor, owner: Owner, key: bytes, *, issuer: str) -> Enrolment | None:
    """The owner's enrolment waiting for its first code, shown again (a page reloaded, a
    code mistyped); None when there is none, or when it is confirmed already."""
    row = _read(executor, owner)
    if row is None or row.confirmed:
        return None
    secret = sealing.unseal(key, row.sealed, owner.label)
    try:
        uri = totp.provisioning_uri(secret, owner.name, issuer)
    except ValueError as reason:
        raise UsageError(f"ISSUER: {issuer[:80]!r}: {reason}") from None
    return Enrolment(str(owner), secret, uri)


def confirm(executor: Executor, owner: Owner, key: bytes, code: str, now: float) -> RecoveryCodes:
    """Put an enrolment in force with a first code from the app; returns the recovery codes,
    shown only now."""
    if totp.normalize_code(code) is None:
        raise UsageError(f"CODE: {_shape(code)}; a code from the app is {totp.DIGITS} digits")
    row = _read(executor, owner)
    if row is None:
        raise UsageError(f"{owner} has no TOTP enrolment to confirm", hint="enrol first")
    if row.confirmed:
        raise UsageError(f"the second factor of {owner} is already confirmed")
    step = totp.verify(sealing.unseal(key, row.sealed, owner.label), code, now, row.last_step)
    if step is None:
        raise CodeRefused(
            "CODE: the code does not match; nothing was changed",
            hint="type the code the app shows now; if it never matches, check the phone's clock",
        )
    codes = recovery.new_codes()
    prelude = psql.set_secret_variable("sealed", row.sealed) + "".join(
        psql.set_secret_variable(name, recovery.code_hash(shown))
        for name, shown in zip(_CODE_VARIABLES, codes, strict=True)
    )
    counts = _counts(
        psql.query(
            executor,
            _CONFIRM,
            {**owner.variables(), "id": row.id, "step": str(step)},
            prelude=prelude,
        )
    )
    if not counts.get("confirmed") or counts.get("codes") != len(codes):
        raise MailstackError(
            f"the TOTP enrolment of {owner} changed meanwhile; nothing was confirmed",
            hint="enrol again",
        )
    return RecoveryCodes(str(owner), codes)


def check(executor: Executor, owner: Owner, key: bytes, code: str, now: float) -> MfaCheck:
    """Whether the code (TOTP, or a recovery code) proves the second factor now. Either is
    used up by the same statement that accepts it: never accepted twice."""
    if totp.normalize_code(code) is not None:
        return _check_totp(executor, owner, key, code, now)
    if recovery.normalize(code) is not None:
        return _check_recovery(executor, owner, code)
    raise UsageError(f"CODE: {_shape(code)}; expected {_CODE_SHAPE}")


def disable(executor: Executor, owner: Owner) -> MfaDisabled:
    """Remove the owner's second factor and its recovery codes. The caller decides who may:
    a user proves a current code first, an administrator resets another account."""
    rows = psql.query(executor, _DISABLE, owner.variables(), single_transaction=True)
    _require_account(rows, owner)
    removed = [row for row in rows if row[0] == "removed"]
    if not removed:
        raise UsageError(f"{owner} has no second factor")
    return MfaDisabled(str(owner), was_confirmed=removed[0][1] == "t")


def _check_totp(executor: Executor, owner: Owner, key: bytes, code: str, now: float) -> MfaCheck:
    row = _confirmed_row(executor, owner)
    step = totp.verify(sealing.unseal(key, row.sealed, owner.label), code, now, row.last_step)
    if step is None:
        return MfaCheck(str(owner), accepted=False, method="")
    rows = psql.query(
        executor,
        _USE_STEP,
        {**owner.variables(), "id": row.id, "step": str(step)},
        prelude=psql.set_secret_variable("sealed", row.sealed),
    )
    accepted = any(answer[0] == "accepted" for answer in rows)  # none: a parallel use won
    return MfaCheck(str(owner), accepted=accepted, method="totp" if accepted else "")


def _check_recovery(executor: Executor, owner: Owner, code: str) -> MfaCheck:
    _confirmed_row(executor, owner)
    counts = _counts(
        psql.query(
            executor,
            _USE_RECOVERY,
            owner.variables(),
            prelude=psql.set_secret_variable("code_hash", recovery.code_hash(code)),
        )
    )
    if not counts.get("used"):
        return MfaCheck(str(owner), accepted=False, method="")
    left = counts.get("left", 0) - counts["used"]
    return MfaCheck(str(owner), accepted=True, method="recovery", recovery_codes_left=left)


def _confirmed_row(executor: Executor, owner: Owner) -> _Row:
    row = _read(executor, owner)
    if row is None or not row.confirmed:
        raise UsageError(f"{owner} has no confirmed second factor")
    return row


def _read(executor: Executor, owner: Owner) -> _Row | None:
    rows = psql.query(executor, _READ, owner.variables())
    _require_account(rows, owner)
    found = [row for row in rows if row[0] == "totp"]
    if not found:
        return None
    try:
        _, row_id, sealed, confirmed, last_step, codes = found[0]
        return _Row(row_id, sealed, confirmed == "t", int(last_step), int(codes))
    except ValueError:
        raise MailstackError("unexpected answer from the database") from None


def _require_account(rows: Sequence[Sequence[str]], owner: Owner) -> None:
    if not _counts([row for row in rows if row[0] == "account"]).get("account"):
        raise UsageError(f"{owner} does not exist")


def _counts(rows: Sequence[Sequence[str]]) -> dict[str, int]:
    """Rows of ('label', count) as {label: count}."""
    try:
        return {row[0]: int(row[1]) for row in rows}
    except (IndexError, ValueError):
        raise MailstackError("unexpected answer from the database") from None


def _shape(code: str) -> str:
    # A code is half a credential: say what was wrong with it, never echo it.
    return f"the value given ({len(code)} characters) is not a valid code"
