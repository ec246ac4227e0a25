"""Alias domains: mail to user@alias is delivered as mail to user@target (PostgreSQL).

Postfix lists alias domains as virtual_alias_domains and rewrites each known address of
the target (its mailboxes, its aliases, its catch-all) to the alias domain; an unknown
user@alias is refused at RCPT like an unknown user@target. Mailboxes of the target may
also send as the same local part of the alias domain (postfix_senders).
"""

from __future__ import annotations

from dataclasses import dataclass

# The directory's one psql path: this module extends the directory.
from mailstack.accounts import names
from mailstack.accounts.addresses import domain_display
from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import AlreadyExists, MailstackError, NotFound, UsageError


@dataclass(frozen=True)
class AliasDomain:
    name: str
    target: str
    created: str

    def __str__(self) -> str:
        return f"{domain_display(self.name)} -> {domain_display(self.target)}"


@dataclass(frozen=True)
class AliasDomainChange:
    name: str
    target: str
    added: bool

    def __str__(self) -> str:
        verb = "added" if self.added else "removed"
        return f"{verb} alias domain {self.name} -> {self.target}"


_ADD = """
WITH target AS (SELECT name FROM domains WHERE name = :'target'),
clash AS (SELECT name FROM domains WHERE name = :'name'),
existing AS (SELECT target FROM alias_domains WHERE name = :'name'),
added AS (
    INSERT INTO alias_domains (name, target)
    SELECT :'name', name FROM target WHERE NOT EXISTS (SELECT 1 FROM clash)
    ON CONFLICT (name) DO NOTHING
    RETURNING name
)
SELECT 'target', count(*)::text FROM target
UNION ALL SELECT 'clash', count(*)::text FROM clash
UNION ALL SELECT 'existing', target FROM existing
UNION ALL SELECT 'added', count(*)::text FROM added;
"""

# Grants to send as addresses of the alias domain go with it.
_REMOVE = """
WITH gone AS (DELETE FROM alias_domains WHERE name = :'name' RETURNING name, target),
grants AS (
    DELETE FROM sender_permissions
    WHERE EXISTS (SELECT 1 FROM gone) AND split_part(sender, '@', 2) = :'name'
    RETURNING sender
)
SELECT 'removed', target FROM gone
UNION ALL SELECT 'grant', sender FROM grants;
"""


def add_alias_domain(compose: Executor, name: str, target: str) -> AliasDomainChange:
    """name and target: domain names (checked by mailstack.accounts.names)."""
    name = names.require("ALIAS_DOMAIN", names.domain, name)
    target = names.require("TARGET_DOMAIN", names.domain, target)
    if name == target:
        raise UsageError(f"ALIAS_DOMAIN: {name} cannot be an alias of itself")
    rows = psql.query(compose, _ADD, {"name": name, "target": target})
    found = {row[0]: row[1] for row in rows}
    if found.get("target") != "1":
        raise NotFound(
            f"TARGET_DOMAIN: {target} is not a mail domain of this stack",
            hint=f"add it first (mailstack domain add {target}), or see mailstack domain list",
        )
    if found.get("clash") == "1":
        raise AlreadyExists(
            f"ALIAS_DOMAIN: {name} is a mail domain of this stack; an alias domain has no "
            "mailboxes of its own",
            hint=f"remove it first (mailstack domain remove {name}) if that is what you want",
        )
    if "existing" in found:
        raise AlreadyExists(f"{name} is already an alias domain (of {found['existing']})")
    if found.get("added") != "1":
        raise MailstackError(f"alias domain {name} was not added; see mailstack domain alias list")
    return AliasDomainChange(name, target, added=True)


def remove_alias_domain(compose: Executor, name: str) -> AliasDomainChange:
    rows = psql.query(compose, _REMOVE, {"name": name})
    removed = [row[1] for row in rows if row[0] == "removed"]
    if not removed:
        raise NotFound(f"{name} is not an alias domain", hint="see mailstack domain alias list")
    return AliasDomainChange(name, removed[0], added=False)


def list_alias_domains(compose: Executor) -> list[AliasDomain]:
    rows = psql.query(
        compose,
        "SELECT name, target, to_char(created AT TIME ZONE 'UTC', "
        '\'YYYY-MM-DD"T"HH24:MI:SS"Z"\') FROM alias_domains ORDER BY name;',
    )
    return [AliasDomain(row[0], row[1], row[2]) for row in rows]
