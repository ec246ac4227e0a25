"""The mail directory in PostgreSQL: domains and mailboxes (added, listed, changed, removed).

Everything goes through `psql` (mailstack.adapters.psql) inside the running `db` container
(as the postgres superuser, over its local socket). SQL text is constant and sent on stdin;
every value travels as a psql variable (`psql -v name=value`, used as :'name'), so no value
is ever formatted into SQL. Password hashes are the one exception to "values in argv": they are
set with `\\set` on stdin (after a strict shape check) so they never show up in the host's
process list.

The schema and its migrations are in mailstack.accounts.migrations, aliases in
mailstack.accounts.aliases, and the stored mail of a removed domain or mailbox in
mailstack.accounts.mailstore.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailstack.accounts import domain_quota, names, passwords
from mailstack.accounts.addresses import domain_display, split_address
from mailstack.accounts.mailstore import (
    MAIL_ROOT,
    ConfirmPurge,
    StoredMail,
    confirmed_purge,
    delete_collections,
    delete_stored_mail,
    domain_mail_path,
    kick_sessions,
    mailbox_mail_path,
    mailbox_usage,
)
from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import (
    AlreadyExists,
    ExternalCommandFailed,
    InUse,
    MailstackError,
    NotFound,
    UsageError,
)
from mailstack.units import MAX_QUOTA_BYTES, human_size


@dataclass(frozen=True)
class Domain:
    name: str
    active: bool
    mailboxes: int
    created: str
    # From domain_quota.with_quotas: the domain quota (0: none) and the sum of its
    # mailboxes' quotas.
    quota_bytes: int = 0
    allocated_bytes: int = 0

    def __str__(self) -> str:
        state = "" if self.active else " (inactive)"
        shown = domain_display(self.name)
        quota = domain_quota.shown(self.quota_bytes)
        allocated = human_size(self.allocated_bytes)
        return f"{shown}{state}  {self.mailboxes} mailbox(es), quota {quota}, {allocated} allocated"


@dataclass(frozen=True)
class Mailbox:
    address: str
    domain: str
    quota_bytes: int
    active: bool
    created: str
    storage_bytes: int | None = None  # from Dovecot's quota (KiB granularity); None: unknown
    messages: int | None = None

    def __str__(self) -> str:
        state = "" if self.active else " (inactive)"
        quota = "no quota" if self.quota_bytes == 0 else f"quota {human_size(self.quota_bytes)}"
        if self.storage_bytes is None:
            return f"{self.address}{state}  {quota}"
        used = f"{human_size(self.storage_bytes)} used"
        if self.quota_bytes:
            used += f" of {human_size(self.quota_bytes)} ({self.quota_percent}%)"
        else:
            used += ", no quota"
        return f"{self.address}{state}  {used}, {self.messages} message(s)"

    @property
    def quota_percent(self) -> int | None:
        if self.storage_bytes is None or not self.quota_bytes:
            return None
        return round(100 * self.storage_bytes / self.quota_bytes)


@dataclass(frozen=True)
class DomainRemoval:
    domain: str
    mail_path: str
    removed_from_directory: bool
    mailboxes: tuple[str, ...]
    aliases: tuple[str, ...]  # "source -> destination", every row that went
    purged: StoredMail | None  # what was deleted on --purge; None: stored mail kept
    alias_domains: tuple[str, ...] = ()  # alias domains that pointed at it, removed with it
    calendars: str = ""  # what --purge did to its users' calendars and contacts (features.dav)

    def __str__(self) -> str:
        lines = []
        if self.removed_from_directory:
            lines.append(f"removed domain {self.domain}")
        lines += [f"  removed mailbox {address}" for address in self.mailboxes]
        lines += [f"  removed alias {alias}" for alias in self.aliases]
        lines += [f"  removed alias domain {alias}" for alias in self.alias_domains]
        command = f"mailstack domain remove {self.domain} --purge"
        lines.append(_mail_fate(self.purged, self.mail_path, command))
        return "\n".join([*lines, *([self.calendars] if self.calendars else [])])


@dataclass(frozen=True)
class MailboxRemoval:
    address: str
    mail_path: str
    removed_from_directory: bool
    aliases: tuple[str, ...]  # "source -> destination": forwardings of it and pointers to it
    purged: StoredMail | None
    calendars: str = ""  # what --purge did to its calendars and contacts (features.dav)

    def __str__(self) -> str:
        lines = [f"removed mailbox {self.address}"] if self.removed_from_directory else []
        lines += [f"  removed alias {alias}" for alias in self.aliases]
        command = f"mailstack mailbox remove {self.address} --purge"
        lines.append(_mail_fate(self.purged, self.mail_path, command))
        return "\n".join([*lines, *([self.calendars] if self.calendars else [])])


@dataclass(frozen=True)
class QuotaChange:
    address: str
    old_bytes: int
    new_bytes: int

    def __str__(self) -> str:
        def shown(value: int) -> str:
            return human_size(value) if value else "none"

        return f"quota of {self.address}: {shown(self.old_bytes)} -> {shown(self.new_bytes)}"


# --- domains ---------------------------------------------------------------------------------


# An alias domain's name cannot become a mail domain (a trigger enforces it too): say so in
# one line instead of letting the trigger's error through.
_ADD_DOMAIN = """
WITH alias_of AS (SELECT target FROM alias_domains WHERE name = :'domain'),
added AS (
    INSERT INTO domains (name) SELECT :'domain' WHERE NOT EXISTS (SELECT 1 FROM alias_of)
    ON CONFLICT (name) DO NOTHING
    RETURNING name
)
SELECT 'alias_of', target FROM alias_of
UNION ALL SELECT 'added', name FROM added;
"""


def add_domain(compose: Executor, name: str) -> None:
    """Add a mail domain (checked by mailstack.accounts.names, whoever asks)."""
    name = names.require("DOMAIN", names.domain, name)
    rows = psql.query(compose, _ADD_DOMAIN, {"domain": name})
    for kind, value in rows:
        if kind == "alias_of":
            raise AlreadyExists(
                f"DOMAIN: {name} is an alias domain of {value}; a name is one or the other",
                hint=f"to make it a mail domain, first: mailstack domain alias remove {name}",
            )
    if not rows:
        raise AlreadyExists(f"domain {name} already exists")


def list_domains(compose: Executor) -> list[Domain]:
    """The domains (their quotas left at 0: domain_quota.with_quotas reads them)."""
    rows = psql.query(
        compose,
        "SELECT d.name, d.active, count(m.address), to_char(d.created AT TIME ZONE 'UTC', "
        '\'YYYY-MM-DD"T"HH24:MI:SS"Z"\') FROM domains d '
        "LEFT JOIN mailboxes m ON m.domain = d.name "
        "GROUP BY d.name ORDER BY d.name;",
    )
    return [Domain(row[0], row[1] == "t", int(row[2]), row[3]) for row in rows]


def signing_domains(compose: Executor) -> set[str]:
    """The mail domains and the alias domains: each signs its mail with a DKIM key of its
    own (`domain add`, `domain alias add`, or a host job the admin service queued)."""
    rows = psql.query(
        compose, "SELECT d.name FROM domains d UNION SELECT a.name FROM alias_domains a;"
    )
    return {row[0] for row in rows}


_DOMAIN_STATE = """
SELECT 'state', EXISTS (SELECT 1 FROM domains WHERE name = :'domain'),
    (SELECT count(*) FROM mailboxes WHERE domain = :'domain'),
    (SELECT count(DISTINCT source) FROM aliases WHERE domain = :'domain');
SELECT 'alias_domain', name FROM alias_domains WHERE target = :'domain' ORDER BY name;
"""

# One transaction. The domain row is locked first (a concurrent `mailbox add` waits), the
# guard is computed once into psql variables (\gset), and every DELETE carries it: without
# --force nothing is deleted while the domain is still in use. Aliases elsewhere that point
# into the domain go too; they would otherwise turn into forwards to the outside world.
_REMOVE_DOMAIN = """
SELECT 'locked', name FROM domains WHERE name = :'domain' FOR UPDATE;
SELECT EXISTS (SELECT 1 FROM domains WHERE name = :'domain') AS domain_found,
    (SELECT count(*) FROM mailboxes WHERE domain = :'domain') AS mailbox_count,
    (SELECT count(DISTINCT source) FROM aliases WHERE domain = :'domain') AS alias_count,
    (SELECT count(*) FROM alias_domains WHERE target = :'domain') AS alias_domain_count
\\gset
SELECT :'force' = 'yes' OR (:'mailbox_count' = '0' AND :'alias_count' = '0'
    AND :'alias_domain_count' = '0') AS may_remove
\\gset
SELECT 'state', :'domain_found', :'mailbox_count', :'alias_count';
SELECT 'alias_domain', name FROM alias_domains WHERE target = :'domain' ORDER BY name;
DELETE FROM aliases
    WHERE :'domain_found' = 't' AND :'may_remove' = 't'
    AND (domain = :'domain' OR lower(substring(destination from '@([^@]*)$')) = :'domain')
    RETURNING 'alias', source, destination;
WITH gone AS (
    DELETE FROM alias_domains WHERE target = :'domain' AND :'may_remove' = 't' RETURNING name
), grants AS (
    DELETE FROM sender_permissions WHERE split_part(sender, '@', 2) IN (SELECT name FROM gone)
    RETURNING sender
)
SELECT 'alias_domain_removed', name FROM gone
UNION ALL SELECT 'grant', sender FROM grants;
DELETE FROM mailboxes
    WHERE domain = :'domain' AND :'may_remove' = 't'
    RETURNING 'mailbox', address;
DELETE FROM domains
    WHERE name = :'domain' AND :'may_remove' = 't'
    RETURNING 'domain', name;
"""


def remove_domain(
    compose: Executor,
    name: str,
    *,
    force: bool = False,
    purge: bool = False,
    confirm: ConfirmPurge | None = None,
    kick: bool = True,
    collections: bool = False,
) -> DomainRemoval:
    """Remove a domain; with force also its mailboxes and aliases; with purge its stored mail.

    Refuses before changing anything when the domain is in use without force, or when
    purge is asked and confirm() does not say yes. Without purge the stored mail stays.
    Without kick its users' IMAP sessions are left for the caller to end (the admin
    service cannot reach Dovecot: it queues a host job). With collections (features.dav) a
    purge deletes its users' calendars and contacts too.
    """
    rows = psql.query(compose, _DOMAIN_STATE, {"domain": name})
    exists, mailboxes, aliases = _state(rows)
    alias_domains = _alias_domains(rows)
    if exists and (mailboxes or aliases or alias_domains) and not force:
        raise _domain_in_use(name, mailboxes, aliases, alias_domains)
    path = domain_mail_path(name)
    mail = confirmed_purge(compose, path, purge, confirm)
    if not exists:
        if mail is None or not mail.exists:
            raise NotFound(f"domain {name} does not exist")
        purged = delete_stored_mail(compose, mail)
        calendars = _purge_collections(compose, f"*@{name}", purge and collections)
        return DomainRemoval(name, path, False, (), (), purged, calendars=calendars)

    rows = psql.query(
        compose,
        _REMOVE_DOMAIN,
        {"domain": name, "force": "yes" if force else "no"},
        single_transaction=True,
    )
    removed = [row[1] for row in rows if row[0] == "domain"]
    if not removed:
        exists, mailboxes, aliases = _state(rows)
        if not exists:
            raise NotFound(f"domain {name} does not exist")
        # Someone added a mailbox, an alias or an alias domain meanwhile.
        raise _domain_in_use(name, mailboxes, aliases, _alias_domains(rows))
    if kick:
        kick_sessions(compose, f"*@{name}")
    return DomainRemoval(
        name,
        path,
        True,
        tuple(row[1] for row in rows if row[0] == "mailbox"),
        tuple(f"{row[1]} -> {row[2]}" for row in rows if row[0] == "alias"),
        delete_stored_mail(compose, mail) if mail is not None and mail.exists else None,
        tuple(row[1] for row in rows if row[0] == "alias_domain_removed"),
        _purge_collections(compose, f"*@{name}", purge and collections),
    )


def _alias_domains(rows: list[list[str]]) -> list[str]:
    return [row[1] for row in rows if row[0] == "alias_domain"]


def _domain_in_use(name: str, mailboxes: int, aliases: int, alias_domains: list[str]) -> InUse:
    has = f"{mailboxes} mailbox(es) and {aliases} alias(es)"
    if alias_domains:
        has = f"{mailboxes} mailbox(es), {aliases} alias(es) and the alias domain(s) " + ", ".join(
            alias_domains
        )
    return InUse(
        f"domain {name} still has {has}; nothing was removed",
        hint="remove them first, or pass --force to remove them with the domain "
        "(their stored mail is kept unless you also pass --purge)",
    )


def _state(rows: list[list[str]]) -> tuple[bool, int, int]:
    for row in rows:
        if row[0] == "state" and len(row) == 4:
            return row[1] == "t", int(row[2]), int(row[3])
    raise MailstackError("unexpected answer from the database")


# --- mailboxes -------------------------------------------------------------------------------


# After the domain's lock (domain_quota.LOCK_DOMAIN): the row goes in only within the
# domain quota, if the domain has one; the answer gives the figures for the refusal.
_ADD_MAILBOX = (
    domain_quota.LOCK_DOMAIN  # noqa: S608  # constant text only (values are :variables)
    + """
WITH dom AS (SELECT name, quota_bytes FROM domains WHERE name = :'domain'),
used AS (SELECT coalesce(sum(quota_bytes), 0) AS allocated FROM mailboxes
    WHERE domain = :'domain'),
candidates AS (SELECT node, rank FROM unnest(string_to_array(:'back_ends', ' '))
    WITH ORDINALITY AS listed (node, rank)),
home AS (SELECT c.node FROM candidates c ORDER BY (SELECT count(*) FROM mailboxes m
    WHERE coalesce(m.back_end, :'first_back_end') = c.node), c.rank LIMIT 1),
added AS (
    INSERT INTO mailboxes (address, local_part, domain, password, quota_bytes, back_end)
    SELECT :'address', :'local_part', dom.name, :'password_hash',
        CAST(:'quota_bytes' AS bigint), (SELECT node FROM home)
    FROM dom, used
    WHERE dom.quota_bytes = 0 OR (CAST(:'quota_bytes' AS bigint) > 0
        AND used.allocated + CAST(:'quota_bytes' AS bigint) <= dom.quota_bytes)
    ON CONFLICT (address) DO NOTHING RETURNING address
)
SELECT 'result', (SELECT count(*) FROM added), EXISTS (SELECT 1 FROM dom),
    EXISTS (SELECT 1 FROM mailboxes WHERE address = :'address'),
    coalesce((SELECT quota_bytes FROM dom), 0), (SELECT allocated FROM used);
"""
)


def add_mailbox(
    compose: Executor,
    address: str,
    password_hash: str,
    quota_bytes: int,
    *,
    default_quota: bool = False,
    back_ends: Sequence[str] = (),
    first_back_end: str = "",
) -> None:
    """Add a mailbox (address checked by mailstack.accounts.names; the hash from passwords),
    within its domain's quota (default_quota: quota_bytes is the stack's default, which the
    refusal says). On a cluster its home is the back end (a mailbox node's name) of
    back_ends that holds the fewest mailboxes, the first of them on a tie; mailboxes without
    one count as first_back_end's (docs/cluster.md). One host: none."""
    address = names.require("ADDRESS", names.mailbox, address)
    local_part, domain = split_address(address)
    rows = psql.query(
        compose,
        _ADD_MAILBOX,
        {
            "address": address.lower(),
            "local_part": local_part,
            "domain": domain,
            "quota_bytes": _quota(quota_bytes),
            "back_ends": " ".join(back_ends),
            "first_back_end": first_back_end,
        },
        prelude=_password_hash_line(password_hash),
        single_transaction=True,
    )
    added, domain_exists, exists, total, allocated = domain_quota.result_figures(rows, 6)
    if added:
        return
    if not domain_exists:
        raise NotFound(
            f"{domain} is not a mail domain of this stack",
            hint=f"add it first: mailstack domain add {domain}",
        )
    if exists:
        raise AlreadyExists(f"mailbox {address.lower()} already exists")
    refusal = domain_quota.mailbox_refusal(
        domain, quota_bytes, total, allocated, default=default_quota
    )
    raise refusal or MailstackError("unexpected answer from the database")


def list_mailboxes(compose: Executor, domain: str | None = None) -> list[Mailbox]:
    rows = psql.query(
        compose,
        "SELECT address, domain, quota_bytes, active, to_char(created AT TIME ZONE 'UTC', "
        '\'YYYY-MM-DD"T"HH24:MI:SS"Z"\') FROM mailboxes '
        "WHERE :'domain' = '' OR domain = :'domain' ORDER BY domain, local_part;",
        {"domain": domain or ""},
    )
    return [Mailbox(row[0], row[1], int(row[2]), row[3] == "t", row[4]) for row in rows]


@dataclass(frozen=True)
class MailboxReport:
    """Mailboxes with their usage; usage_unavailable says why usage is missing, if it is."""

    mailboxes: list[Mailbox]
    usage_unavailable: str | None


def mailbox_report(compose: Executor, domain: str | None = None) -> MailboxReport:
    """The mailboxes of the directory with Dovecot's usage figures (for `mailbox list`)."""
    mailboxes = list_mailboxes(compose, domain)
    if not mailboxes:
        return MailboxReport([], None)
    try:
        usage = mailbox_usage(compose)
    except ExternalCommandFailed as e:
        return MailboxReport(mailboxes, f"usage unknown: {e.message.splitlines()[0]}")
    with_usage = []
    for mailbox in mailboxes:
        found = usage.get(mailbox.address)
        if found is None:
            with_usage.append(mailbox)
        else:
            with_usage.append(
                Mailbox(
                    mailbox.address,
                    mailbox.domain,
                    mailbox.quota_bytes,
                    mailbox.active,
                    mailbox.created,
                    found.storage_bytes,
                    found.messages,
                )
            )
    return MailboxReport(with_usage, None)


def _password_hash_line(password_hash: str) -> str:
    """The hash's `\\set` line, only for a value of a password hash's shape."""
    if not passwords.is_password_hash(password_hash):
        raise UsageError("the password hash has an unexpected form; nothing was changed")
    return psql.set_secret_variable("password_hash", password_hash)


def set_mailbox_password(compose: Executor, address: str, password_hash: str) -> None:
    rows = psql.query(
        compose,
        "UPDATE mailboxes SET password = :'password_hash' WHERE address = :'address' "
        "RETURNING address;",
        {"address": address.lower()},
        prelude=_password_hash_line(password_hash),
    )
    if not rows:
        raise NotFound(f"mailbox {address.lower()} does not exist")


# After the domain's lock: the mailbox's row too, then the change only within the domain
# quota (a lower quota always, but never none under one).
_SET_MAILBOX_QUOTA = (
    domain_quota.LOCK_DOMAIN  # noqa: S608  # constant text only (values are :variables)
    + """
WITH old AS (SELECT address, quota_bytes FROM mailboxes WHERE address = :'address' FOR UPDATE),
dom AS (SELECT coalesce(max(quota_bytes), 0) AS quota FROM domains WHERE name = :'domain'),
used AS (SELECT coalesce(sum(quota_bytes), 0) AS allocated FROM mailboxes
    WHERE domain = :'domain'),
changed AS (
    UPDATE mailboxes m SET quota_bytes = CAST(:'quota_bytes' AS bigint) FROM old, dom, used
    WHERE m.address = old.address AND (dom.quota = 0 OR (CAST(:'quota_bytes' AS bigint) > 0
        AND (CAST(:'quota_bytes' AS bigint) <= old.quota_bytes
            OR used.allocated - old.quota_bytes + CAST(:'quota_bytes' AS bigint) <= dom.quota)))
    RETURNING m.quota_bytes
)
SELECT 'result', EXISTS (SELECT 1 FROM old), (SELECT count(*) FROM changed),
    coalesce((SELECT quota_bytes FROM old), 0), dom.quota, used.allocated
FROM dom, used;
"""
)


def set_mailbox_quota(compose: Executor, address: str, quota_bytes: int) -> QuotaChange:
    """Change a mailbox's quota (0: none) within its domain's quota; Dovecot reads it at the
    next login or delivery."""
    address = address.lower()
    rows = psql.query(
        compose,
        _SET_MAILBOX_QUOTA,
        {
            "address": address,
            "domain": address.rpartition("@")[2],
            "quota_bytes": _quota(quota_bytes),
        },
        single_transaction=True,
    )
    found, changed, old, total, allocated = domain_quota.result_figures(rows, 6)
    if not found:
        raise NotFound(f"mailbox {address} does not exist")
    if changed:
        return QuotaChange(address, old, quota_bytes)
    refusal = domain_quota.mailbox_refusal(
        address.rpartition("@")[2], quota_bytes, total, allocated, old
    )
    raise refusal or MailstackError("unexpected answer from the database")


# The mailbox, its own forwardings (aliases with it as source: they would keep accepting
# its mail) and alias destinations pointing to it (they would accept mail only to bounce it).
_REMOVE_MAILBOX = """
WITH gone AS (DELETE FROM mailboxes WHERE address = :'address' RETURNING address),
dangling AS (
    DELETE FROM aliases
    WHERE EXISTS (SELECT 1 FROM gone)
    AND (source = :'address' OR lower(destination) = :'address')
    RETURNING source, destination
)
SELECT 'mailbox', address, '' FROM gone
UNION ALL SELECT 'alias', source, destination FROM dangling;
"""


def remove_mailbox(
    compose: Executor,
    address: str,
    *,
    purge: bool = False,
    confirm: ConfirmPurge | None = None,
    kick: bool = True,
    collections: bool = False,
) -> MailboxRemoval:
    """Remove a mailbox; its stored mail stays unless purge is asked and confirmed. Without
    kick its IMAP sessions are left for the caller to end (see remove_domain). With
    collections (features.dav) a purge deletes its calendars and contacts too."""
    address = address.lower()
    local_part, domain = split_address(address)
    home = f"{MAIL_ROOT}/{domain}/{local_part}"  # shown only; a purge re-validates it
    path = mailbox_mail_path(address) if purge else home
    rows = psql.query(
        compose,
        "SELECT 'state', EXISTS (SELECT 1 FROM mailboxes WHERE address = :'address');",
        {"address": address},
    )
    exists = bool(rows) and rows[0][-1] == "t"
    mail = confirmed_purge(compose, path, purge, confirm)
    if not exists:
        if mail is None or not mail.exists:
            raise NotFound(f"mailbox {address} does not exist")
        purged = delete_stored_mail(compose, mail)
        calendars = _purge_collections(compose, address, purge and collections)
        return MailboxRemoval(address, home, False, (), purged, calendars)
    rows = psql.query(compose, _REMOVE_MAILBOX, {"address": address})
    if not any(row[0] == "mailbox" for row in rows):
        raise NotFound(f"mailbox {address} does not exist")
    if kick:
        kick_sessions(compose, address)
    return MailboxRemoval(
        address,
        home,
        True,
        tuple(f"{row[1]} -> {row[2]}" for row in rows if row[0] == "alias"),
        delete_stored_mail(compose, mail) if mail is not None and mail.exists else None,
        _purge_collections(compose, address, purge and collections),
    )


# --- helpers ---------------------------------------------------------------------------------


def _purge_collections(compose: Executor, owners: str, wanted: bool) -> str:
    """With a purge on a stack with calendars (features.dav): delete the owners'."""
    return delete_collections(compose, owners) if wanted else ""


def _mail_fate(purged: StoredMail | None, path: str, purge_command: str) -> str:
    if purged is None:
        return f"stored mail (if any) is kept in {path}; to delete it: {purge_command}"
    if not purged.exists:
        return f"no stored mail in {path}"
    return f"deleted the stored mail in {purged}"


def _quota(quota_bytes: int) -> str:
    if quota_bytes < 0:
        raise UsageError("the quota cannot be negative")
    if quota_bytes > MAX_QUOTA_BYTES:
        raise UsageError("the quota is too large")
    return str(quota_bytes)
