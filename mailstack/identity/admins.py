"""Administrators and domain administrators (issue 16): accounts of their own, not mailboxes.

An administrator (role `admin`) manages everything; a domain administrator (`domain_admin`)
only the mail domains granted to it (admin_domains). The password is an Argon2id hash made
by mailstack.accounts.passwords, under the same strength rule as a mailbox's; the second
factor (mfa_totp) is enrolled at the first sign-in to the admin service, and `reset_mfa`
deletes it so that the next sign-in enrols again.

The admin service runs this module on Debian's own Python libraries, so it imports nothing
of pydantic (mailstack.accounts.names does, through the config model) nor of typer or
rich. Every statement is constant SQL through mailstack.adapters.psql, every value a psql
variable; the password hash travels on stdin (`\\set`), never in a process's argv.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from mailstack.accounts import names, passwords
from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import MailstackError, UsageError

ADMIN = "admin"
DOMAIN_ADMIN = "domain_admin"
# How an operator types a role (`--role domain-admin`) and how the table stores it.
_ROLES = {"admin": ADMIN, "domain-admin": DOMAIN_ADMIN, "domain_admin": DOMAIN_ADMIN}
_ROLE_SHOWN = {ADMIN: "admin", DOMAIN_ADMIN: "domain-admin"}

MFA_NONE = "none"
MFA_PENDING = "pending"  # enrolled, no code verified yet: the sign-in still asks to enrol
MFA_CONFIRMED = "confirmed"
_MFA_SHOWN = {
    MFA_NONE: "not enrolled",
    MFA_PENDING: "enrolment not confirmed",
    MFA_CONFIRMED: "confirmed",
}

Rule = Callable[[str], str]


# --- rules -----------------------------------------------------------------------------------


def admin_role(value: str) -> str:
    """A role as typed (admin, domain-admin), as the table stores it (admin, domain_admin)."""
    try:
        return _ROLES[value]
    except KeyError:
        raise ValueError("is not a role: admin or domain-admin") from None


# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admin:
    name: str
    role: str  # admin | domain_admin
    domains: tuple[str, ...]  # a domain administrator's; () for an administrator
    mfa: str  # none | pending | confirmed (mfa_totp)
    active: bool
    created: str

    def __str__(self) -> str:
        state = "" if self.active else " (inactive)"
        if self.role == ADMIN:
            scope = "admin of every domain"
        else:
            scope = f"domain-admin of {', '.join(self.domains) or 'no domain'}"
        mfa = _MFA_SHOWN.get(self.mfa, self.mfa)
        return f"{self.name}{state}  {scope}  second factor: {mfa}  created {self.created}"


@dataclass(frozen=True)
class NewAdmin:
    """The one time a generated password is shown (None: the operator gave it)."""

    name: str
    role: str
    domains: tuple[str, ...]
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        lines = [f"added {_ROLE_SHOWN[self.role]} {self.name}" + _of(self.domains)]
        if self.password is not None:
            lines.append(f"password (shown once, only its hash is stored): {self.password}")
        lines.append("a second factor (TOTP) is enrolled at the first sign-in")
        return "\n".join(lines)


@dataclass(frozen=True)
class AdminRemoval:
    name: str
    role: str
    domains: tuple[str, ...]
    tokens: int  # API tokens it created: deleted with it
    mfa: bool  # it had a second factor (and recovery codes): deleted with it
    admins_left: int  # active administrators (role admin) after the removal

    def __str__(self) -> str:
        went = [f"{self.tokens} API token(s)"] if self.tokens else []
        went += ["its second factor"] if self.mfa else []
        line = f"removed {_ROLE_SHOWN[self.role]} {self.name}" + _of(self.domains)
        lines = [line + (f" with {' and '.join(went)}" if went else "")]
        if self.role == ADMIN and self.admins_left == 0:
            lines.append(
                "no active administrator is left: only root on this host manages the stack "
                "now (make one with: mailstack admin add NAME)"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class DomainGrant:
    name: str
    domain: str
    changed: bool
    revoked: bool = False

    def __str__(self) -> str:
        if self.revoked:
            return f"{self.name} no longer manages {self.domain}"
        if not self.changed:
            return f"{self.name} already manages {self.domain}"
        return f"{self.name} now manages {self.domain}"


@dataclass(frozen=True)
class MfaReset:
    name: str
    had_factor: bool  # there was an enrolment (confirmed or not) and it is gone

    def __str__(self) -> str:
        if not self.had_factor:
            return f"{self.name} has no second factor; nothing to reset"
        return (
            f"removed the second factor of {self.name} and its recovery codes; "
            "the next sign-in enrols a new one"
        )


# --- commands --------------------------------------------------------------------------------


def checked_admin(name: str, role: str, domains: Iterable[str]) -> tuple[str, str, tuple[str, ...]]:
    """A new administrator's name, role and domains by the rules (stored forms), or one line."""
    name = names.require("NAME", names.admin_name, name)
    role = names.require("ROLE", admin_role, role)
    wanted = tuple(sorted({names.require("DOMAIN", names.domain, domain) for domain in domains}))
    if role == ADMIN and wanted:
        raise UsageError(
            f"DOMAIN: {', '.join(wanted)}: an admin manages every domain; "
            "domains are granted to a domain-admin only"
        )
    if role == DOMAIN_ADMIN and not wanted:
        raise UsageError("DOMAIN: a domain-admin needs at least one mail domain of this stack")
    return name, role, wanted


# One statement: the administrator and its domains are written together or not at all (no
# row at all when a domain is missing or the name is taken). The FK checks of admin_domains
# run at the end of the statement, when the new admins row is there.
_ADD_ADMIN = """
WITH wanted AS (SELECT DISTINCT unnest(string_to_array(:'domains', ',')) AS domain),
missing AS (
    SELECT domain FROM wanted w WHERE NOT EXISTS (SELECT 1 FROM domains d WHERE d.name = w.domain)
),
taken AS (SELECT name FROM admins WHERE name = :'name'),
added AS (
    INSERT INTO admins (name, role, password)
    SELECT :'name', :'role', :'password_hash' WHERE NOT EXISTS (SELECT 1 FROM missing)
    ON CONFLICT (name) DO NOTHING
    RETURNING name
),
granted AS (
    INSERT INTO admin_domains (admin, domain) SELECT a.name, w.domain FROM added a, wanted w
    RETURNING domain
)
SELECT 'taken', name FROM taken
UNION ALL SELECT 'missing', domain FROM missing
UNION ALL SELECT 'added', name FROM added
UNION ALL SELECT 'granted', domain FROM granted;
"""


def add_admin(
    executor: Executor,
    name: str,
    role: str = ADMIN,
    domains: Iterable[str] = (),
    password: str | None = None,
) -> NewAdmin:
    """Add an administrator. Without a password one is generated (and returned, once); a given
    one must pass the mailbox strength rule. A domain administrator needs at least one domain,
    each a mail domain of this stack; an administrator takes none."""
    name, role, wanted = checked_admin(name, role, domains)
    plain = passwords.generate_password() if password is None else password
    rows = _labelled(
        psql.query(
            executor,
            _ADD_ADMIN,
            {"name": name, "role": role, "domains": ",".join(wanted)},
            prelude=_password_hash_line(passwords.hash_password(plain)),
        )
    )
    if rows.get("taken"):
        raise UsageError(f"administrator {name} already exists", hint="see mailstack admin list")
    if rows.get("missing"):
        raise _not_a_mail_domain(rows["missing"][0])
    if not rows.get("added"):
        raise UsageError(f"administrator {name} already exists", hint="see mailstack admin list")
    return NewAdmin(name, role, wanted, plain if password is None else None)


_LIST_ADMINS = """
SELECT a.name, a.role, a.active,
    to_char(a.created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
    coalesce((SELECT string_agg(domain, ',' ORDER BY domain) FROM admin_domains
        WHERE admin = a.name), ''),
    CASE WHEN t.id IS NULL THEN 'none' WHEN t.confirmed IS NULL THEN 'pending'
        ELSE 'confirmed' END
FROM admins a LEFT JOIN mfa_totp t ON t.admin = a.name
ORDER BY a.name;
"""


def list_admins(executor: Executor) -> list[Admin]:
    admins = []
    for row in psql.query(executor, _LIST_ADMINS):
        if len(row) != 6:
            raise MailstackError("unexpected answer from the database")
        name, role, active, created, domains, mfa = row
        held = tuple(domains.split(",")) if domains else ()
        admins.append(Admin(name, role, held, mfa, active == "t", created))
    return admins


# The outer SELECTs see the rows as they were before the DELETE: what cascades away with it.
_REMOVE_ADMIN = """
WITH gone AS (DELETE FROM admins WHERE name = :'name' RETURNING role)
SELECT 'removed', role FROM gone
UNION ALL SELECT 'domain', domain FROM admin_domains WHERE admin = :'name'
UNION ALL SELECT 'tokens', CAST(count(*) AS text) FROM api_tokens WHERE created_by = :'name'
UNION ALL SELECT 'mfa', CAST(count(*) AS text) FROM mfa_totp WHERE admin = :'name'
UNION ALL SELECT 'admins_left', CAST(count(*) AS text) FROM admins
    WHERE role = 'admin' AND active AND name <> :'name';
"""


def remove_admin(executor: Executor, name: str) -> AdminRemoval:
    """Remove an administrator; its domains, API tokens and second factor go with it (the
    schema's cascades). Root on the host may remove the last administrator: it can always
    make a new one, and the result says that none is left."""
    name = names.require("NAME", names.admin_name, name)
    rows = _labelled(psql.query(executor, _REMOVE_ADMIN, {"name": name}))
    if not rows.get("removed"):
        raise _no_such_admin(name)
    return AdminRemoval(
        name,
        rows["removed"][0],
        tuple(sorted(rows.get("domain", []))),
        _count(rows, "tokens"),
        _count(rows, "mfa") > 0,
        _count(rows, "admins_left"),
    )


_GRANT_DOMAIN = """
WITH target AS (SELECT name, role FROM admins WHERE name = :'name'),
mail_domain AS (SELECT name FROM domains WHERE name = :'domain'),
added AS (
    INSERT INTO admin_domains (admin, domain)
    SELECT t.name, d.name FROM target t, mail_domain d WHERE t.role = 'domain_admin'
    ON CONFLICT DO NOTHING
    RETURNING domain
)
SELECT 'role', role FROM target
UNION ALL SELECT 'domain', name FROM mail_domain
UNION ALL SELECT 'added', domain FROM added;
"""


def grant_domain(executor: Executor, name: str, domain: str) -> DomainGrant:
    """Let a domain administrator manage one more mail domain."""
    name = names.require("NAME", names.admin_name, name)
    domain = names.require("DOMAIN", names.domain, domain)
    rows = _labelled(psql.query(executor, _GRANT_DOMAIN, {"name": name, "domain": domain}))
    _require_domain_admin(rows, name)
    if not rows.get("domain"):
        raise _not_a_mail_domain(domain)
    return DomainGrant(name, domain, changed=bool(rows.get("added")))


# The administrator's row is locked first, so two revocations at once cannot both take a
# domain and leave none; the DELETE (a statement of its own, a fresh snapshot) then counts
# what is really held.
_REVOKE_DOMAIN = """
SELECT 'locked', name FROM admins WHERE name = :'name' FOR UPDATE;
WITH held AS (SELECT domain FROM admin_domains WHERE admin = :'name'),
gone AS (
    DELETE FROM admin_domains WHERE admin = :'name' AND domain = :'domain'
    AND (SELECT count(*) FROM held) > 1
    RETURNING domain
)
SELECT 'role', role FROM admins WHERE name = :'name'
UNION ALL SELECT 'held', domain FROM held
UNION ALL SELECT 'revoked', domain FROM gone;
"""


def revoke_domain(executor: Executor, name: str, domain: str) -> DomainGrant:
    """Take a mail domain from a domain administrator; never its last one (as at `add`, a
    domain administrator has at least one)."""
    name = names.require("NAME", names.admin_name, name)
    domain = names.require("DOMAIN", names.domain, domain)
    rows = _labelled(
        psql.query(
            executor,
            _REVOKE_DOMAIN,
            {"name": name, "domain": domain},
            single_transaction=True,
        )
    )
    _require_domain_admin(rows, name)
    held = rows.get("held", [])
    if domain not in held:
        raise UsageError(f"{name} does not manage {domain}", hint="see mailstack admin list")
    if not rows.get("revoked"):
        raise UsageError(
            f"{domain} is the only domain {name} manages; a domain-admin keeps at least one",
            hint=f"grant another first (mailstack admin grant {name} DOMAIN) "
            f"or remove it (mailstack admin remove {name})",
        )
    return DomainGrant(name, domain, changed=True, revoked=True)


_RESET_MFA = """
WITH target AS (SELECT name FROM admins WHERE name = :'name'),
gone AS (DELETE FROM mfa_totp WHERE admin = :'name' RETURNING id)
SELECT 'admin', name FROM target
UNION ALL SELECT 'removed', CAST(id AS text) FROM gone;
"""


def reset_mfa(executor: Executor, name: str) -> MfaReset:
    """Delete an administrator's second factor (its recovery codes cascade): the next sign-in
    must enrol a new one. For a lost phone, or a secret that may have leaked."""
    name = names.require("NAME", names.admin_name, name)
    rows = _labelled(psql.query(executor, _RESET_MFA, {"name": name}))
    if not rows.get("admin"):
        raise _no_such_admin(name)
    return MfaReset(name, had_factor=bool(rows.get("removed")))


# --- helpers ---------------------------------------------------------------------------------


def _of(domains: Sequence[str]) -> str:
    return f" of {', '.join(domains)}" if domains else ""


def _password_hash_line(password_hash: str) -> str:
    """The hash's `\\set` line for stdin, only for a value of a password hash's shape."""
    if not passwords.is_password_hash(password_hash):
        raise UsageError("the password hash has an unexpected form; nothing was changed")
    return psql.set_secret_variable("password_hash", password_hash)


def _labelled(rows: list[list[str]]) -> dict[str, list[str]]:
    """Rows of ('label', value) as {label: [values]}."""
    found: dict[str, list[str]] = {}
    for row in rows:
        if len(row) != 2:
            raise MailstackError("unexpected answer from the database")
        found.setdefault(row[0], []).append(row[1])
    return found


def _count(rows: dict[str, list[str]], label: str) -> int:
    try:
        return int(rows[label][0])
    except (KeyError, IndexError, ValueError):
        raise MailstackError("unexpected answer from the database") from None


def _require_domain_admin(rows: dict[str, list[str]], name: str) -> None:
    roles = rows.get("role")
    if not roles:
        raise _no_such_admin(name)
    if roles[0] == ADMIN:
        raise UsageError(
            f"{name} is an admin and manages every domain; domains are granted to a "
            "domain-admin only"
        )


def _no_such_admin(name: str) -> UsageError:
    return UsageError(f"administrator {name} does not exist", hint="see mailstack admin list")


def _not_a_mail_domain(domain: str) -> UsageError:
    return UsageError(
        f"DOMAIN: {domain!r} is not a mail domain of this stack",
        hint="see mailstack domain list; add one with mailstack domain add DOMAIN",
    )
