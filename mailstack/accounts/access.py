"""Who may log in and send as whom: app passwords and sender permissions (PostgreSQL).

App passwords are extra passwords of a mailbox for clients that cannot do better (phones,
old desktop clients): generated here (100 bits, printed once), stored as Argon2id hashes
like the main password, accepted by Dovecot (IMAP, and SMTP AUTH through Dovecot's SASL)
in place of the main password, and revocable one by one without touching it. Dovecot's
passdb takes a single row, so each row also carries the first 32 bits of SHA-256 of its
password (lookup_key): Dovecot computes the same from the password typed and verifies the
one hash that key selects (see templates/config/dovecot/dovecot-sql-app-passwords.conf.ext).

Sender permissions: a mailbox may always use its own address as envelope sender on
587/465 (Postfix's reject_sender_login_mismatch); anything else, such as an alias it
receives, or every address of a domain (@domain), needs a grant here.

Every statement is constant SQL with psql variables (mailstack.accounts.directory).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

# The directory's one psql path and its doveadm kick: this module extends the directory.
from mailstack.accounts import names, passwords
from mailstack.accounts.mailstore import kick_sessions
from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import MailstackError, NotFound, UsageError

MAX_APP_PASSWORDS = 20  # per mailbox
# No look-alikes (0/o, 1/l/i): people type these into phones.
LOOKUP_KEY_HEX = 8  # 32 bits: Dovecot's %{sha256;truncate=32:password}


@dataclass(frozen=True)
class AppPassword:
    address: str
    name: str
    created: str

    def __str__(self) -> str:
        return f"{self.address}  {self.name}  created {self.created}"


@dataclass(frozen=True)
class NewAppPassword:
    """The one time an app password is shown."""

    address: str
    name: str
    password: str

    def __str__(self) -> str:
        return (
            f"app password {self.name} for {self.address}: {self.password}\n"
            "use it in place of the main password (IMAP and SMTP); it is shown only now, "
            f"revoke it with: mailstack mailbox app-password revoke {self.address} {self.name}"
        )


@dataclass(frozen=True)
class AppPasswordRevoked:
    address: str
    name: str

    def __str__(self) -> str:
        return (
            f"revoked app password {self.name} of {self.address}; its open sessions were "
            "ended (clients using the main password reconnect by themselves)"
        )


@dataclass(frozen=True)
class SenderPermission:
    sender: str  # an address, or '@domain' for every address of the domain
    login: str  # the mailbox allowed to use it

    def __str__(self) -> str:
        what = f"any address of {self.sender[1:]}" if self.sender.startswith("@") else self.sender
        return f"{self.login} may send as {what}"


@dataclass(frozen=True)
class SenderChange:
    permission: SenderPermission
    changed: bool
    removed: bool = False

    def __str__(self) -> str:
        if self.removed:
            return f"removed: {self.permission}"
        if not self.changed:
            return f"already allowed: {self.permission}"
        return f"allowed: {self.permission}"


# --- app passwords ---------------------------------------------------------------------------


def lookup_key(password: str) -> str:
    """What Dovecot's %{sha256;truncate=32:password} gives for this password (hex)."""
    return hashlib.sha256(password.encode("utf-8")).hexdigest()[:LOOKUP_KEY_HEX]


def check_app_password_name(name: str) -> str:
    return names.require("NAME", names.app_password_name, name)


_ADD_APP_LOGIN = """
WITH box AS (SELECT address FROM mailboxes WHERE address = :'address'),
existing AS (SELECT name, lookup_key FROM app_passwords WHERE address = :'address'),
added AS (
    INSERT INTO app_passwords (address, name, lookup_key, password)
    SELECT address, :'name', :'lookup_key', :'password_hash' FROM box
    WHERE (SELECT count(*) FROM existing) < CAST(:'limit' AS integer)
    ON CONFLICT DO NOTHING
    RETURNING name
)
SELECT 'mailbox', count(*) FROM box
UNION ALL SELECT 'count', count(*) FROM existing
UNION ALL SELECT 'name_taken', count(*) FROM existing WHERE name = :'name'
UNION ALL SELECT 'added', count(*) FROM added;
"""


def add_app_password(compose: Executor, address: str, name: str) -> NewAppPassword:
    """Make, store (hashed) and return a new app password for a mailbox."""
    address = address.lower()
    check_app_password_name(name)
    for _attempt in range(5):  # a lookup_key shared with another of its passwords: draw again
        password = passwords.generate_password()
        counts = _counts(
            psql.query(
                compose,
                _ADD_APP_LOGIN,
                {
                    "address": address,
                    "name": name,
                    "lookup_key": lookup_key(password),
                    "limit": str(MAX_APP_PASSWORDS),
                },
                prelude=psql.set_secret_variable(
                    "password_hash", passwords.hash_password(password)
                ),
            )
        )
        if not counts["mailbox"]:
            raise UsageError(f"mailbox {address} does not exist")
        if counts["name_taken"]:
            raise UsageError(
                f"mailbox {address} already has an app password named {name}",
                hint=f"revoke it first (mailstack mailbox app-password revoke {address} {name}) "
                "or choose another name",
            )
        if counts["count"] >= MAX_APP_PASSWORDS:
            raise UsageError(
                f"mailbox {address} has {counts['count']} app passwords, the most allowed",
                hint="revoke the ones no longer used (mailstack mailbox app-password list)",
            )
        if counts["added"]:
            return NewAppPassword(address, name, password)
    raise MailstackError(f"could not store a new app password for {address}; try again")


def list_app_passwords(compose: Executor, address: str) -> list[AppPassword]:
    address = address.lower()
    rows = psql.query(
        compose,
        "SELECT 'mailbox', address, '' FROM mailboxes WHERE address = :'address' "
        "UNION ALL SELECT 'app', name, to_char(created AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM app_passwords WHERE address = :'address' "
        "ORDER BY 1 DESC, 2;",
        {"address": address},
    )
    if not any(row[0] == "mailbox" for row in rows):
        raise UsageError(f"mailbox {address} does not exist")
    return [AppPassword(address, row[1], row[2]) for row in rows if row[0] == "app"]


def revoke_app_password(
    compose: Executor, address: str, name: str, *, kick: bool = True
) -> AppPasswordRevoked:
    """Delete one app password and end the mailbox's open sessions (they may use it);
    kick=False for a caller with no Docker socket, which queues the kick instead."""
    address = address.lower()
    check_app_password_name(name)
    rows = psql.query(
        compose,
        "WITH gone AS (DELETE FROM app_passwords WHERE address = :'address' "
        "AND name = :'name' RETURNING name) "
        "SELECT 'revoked', name FROM gone "
        "UNION ALL SELECT 'mailbox', address FROM mailboxes WHERE address = :'address';",
        {"address": address, "name": name},
    )
    if not any(row[0] == "mailbox" for row in rows):
        raise UsageError(f"mailbox {address} does not exist")
    if not any(row[0] == "revoked" for row in rows):
        raise UsageError(
            f"mailbox {address} has no app password named {name}",
            hint=f"see mailstack mailbox app-password list {address}",
        )
    # Dovecot cannot tell which password a session logged in with: end them all.
    if kick:
        kick_sessions(compose, address)
    return AppPasswordRevoked(address, name)


# --- sender permissions ----------------------------------------------------------------------

_ADD_SENDER = """
WITH box AS (SELECT address FROM mailboxes WHERE address = :'login'),
local AS (
    SELECT name FROM domains WHERE name = :'domain'
    UNION SELECT name FROM alias_domains WHERE name = :'domain'
),
added AS (
    INSERT INTO sender_permissions (sender, login)
    SELECT :'sender', address FROM box WHERE EXISTS (SELECT 1 FROM local)
    ON CONFLICT (sender, login) DO NOTHING
    RETURNING sender
)
SELECT 'mailbox', count(*) FROM box
UNION ALL SELECT 'domain', count(*) FROM local
UNION ALL SELECT 'added', count(*) FROM added;
"""


def add_sender(compose: Executor, sender: str, login: str) -> SenderChange:
    """Allow mailbox `login` to send as `sender` (an address or '@domain' of this stack);
    both checked by mailstack.accounts.names."""
    sender = names.require("SENDER", names.source, sender)
    login = names.require("MAILBOX", names.mailbox, login)
    domain = _sender_domain(sender)
    if sender == login:
        raise UsageError(f"{login} may always send as its own address; nothing to allow")
    counts = _counts(
        psql.query(compose, _ADD_SENDER, {"sender": sender, "login": login, "domain": domain})
    )
    if not counts["mailbox"]:
        raise NotFound(f"MAILBOX: {login} is not a mailbox of this stack")
    if not counts["domain"]:
        raise NotFound(
            f"SENDER: {sender}: {domain} is not a mail domain or alias domain of this stack",
            hint="only addresses of this stack's domains can be granted (SPF/DKIM/DMARC)",
        )
    return SenderChange(SenderPermission(sender, login), changed=bool(counts["added"]))


def remove_sender(compose: Executor, sender: str, login: str) -> SenderChange:
    sender, login = sender.lower(), login.lower()
    _sender_domain(sender)
    rows = psql.query(
        compose,
        "DELETE FROM sender_permissions WHERE sender = :'sender' AND login = :'login' "
        "RETURNING sender;",
        {"sender": sender, "login": login},
    )
    if not rows:
        raise NotFound(
            f"{login} has no permission to send as {sender}",
            hint="see mailstack alias sender list",
        )
    return SenderChange(SenderPermission(sender, login), changed=True, removed=True)


def list_senders(compose: Executor, domain: str | None = None) -> list[SenderPermission]:
    rows = psql.query(
        compose,
        "SELECT sender, login FROM sender_permissions "
        "WHERE :'domain' = '' OR split_part(sender, '@', 2) = :'domain' "
        "OR split_part(login, '@', 2) = :'domain' ORDER BY sender, login;",
        {"domain": domain or ""},
    )
    return [SenderPermission(row[0], row[1]) for row in rows]


def _sender_domain(sender: str) -> str:
    local_part, separator, domain = sender.rpartition("@")
    if not separator or not domain or "," in sender:
        raise UsageError(f"SENDER: {sender[:80]!r} is not an address or @domain")
    del local_part  # '' for @domain: every address of the domain
    return domain


def _counts(rows: Sequence[Sequence[str]]) -> dict[str, int]:
    """Rows of ('label', count) as {label: count}."""
    try:
        return {row[0]: int(row[1]) for row in rows}
    except (IndexError, ValueError):
        raise MailstackError("unexpected answer from the database") from None
