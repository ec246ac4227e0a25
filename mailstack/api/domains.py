"""The REST API's domains and aliases (/api/v1/domains, /api/v1/aliases), framework-free like
mailstack.api.operations, whose rules they follow: the CLI's checks first, then the caller's
principal, then the core (accounts.directory, accounts.aliases).

Domains: every caller sees the domains it manages; only an administrator adds or removes
one. A new domain's DKIM key needs the host (render, rspamd restart), which the admin
service cannot reach: POST queues a domain.publish_key host job (runtime.jobqueue) and GET
tells each domain's key state from its latest job.

Domain quotas: every caller reads the quota of the domains it manages (with what its
mailboxes hold); only an administrator sets one (accounts.domain_quota has the rule).

Aliases: scoped by the source's domain. The destinations may be anywhere, as the CLI
allows (a domain administrator may forward its mail outside), but the source must be in a
domain the caller manages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mailstack.accounts import aliases, directory, domain_quota, names
from mailstack.adapters.psql import Executor
from mailstack.api.operations import checked, refusals
from mailstack.errors import NotFound, UsageError
from mailstack.identity.principal import Principal
from mailstack.runtime import jobqueue

# A domain the API never added was added on the host, which makes its key at once.
KEY_PUBLISHED = "published"
KEY_QUEUED = "queued"
KEY_FAILED = "failed"
QUEUED_NOTE = (
    "its DKIM key is queued for the host: `mailstack jobs run` (every minute from its timer) "
    "makes and publishes it; GET /api/v1/domains shows when it is"
)


def list_domains(executor: Executor, caller: Principal) -> dict[str, Any]:
    """GET /api/v1/domains (scope read): the domains the caller manages, each with its key's
    state (published, queued, failed and why)."""
    with refusals():
        found = [d for d in directory.list_domains(executor) if caller.may_manage(d.name)]
        found = domain_quota.with_quotas(executor, found)
        states = jobqueue.key_states(executor) if found else {}
    return {"domains": [_domain(domain, states.get(domain.name)) for domain in found]}


def get_domain(executor: Executor, caller: Principal, name: str) -> dict[str, Any]:
    """GET /api/v1/domains/{name} (scope read): one domain the caller manages."""
    domain = checked("DOMAIN", names.domain, name)
    with refusals():
        caller.require_domain(domain)
        found = [d for d in directory.list_domains(executor) if d.name == domain]
        found = domain_quota.with_quotas(executor, found)
        if not found:
            raise NotFound(f"domain {domain} does not exist")
        states = jobqueue.key_states(executor)
    return _domain(found[0], states.get(domain))


def set_domain_quota(
    executor: Executor, caller: Principal, name: str, quota: str
) -> dict[str, Any]:
    """PATCH /api/v1/domains/{name} {"quota": "10G" | "none"} (scope domains,
    administrators only: a domain administrator sets its mailboxes' quotas within it)."""
    domain = checked("DOMAIN", names.domain, name)
    with refusals():
        caller.require_admin()
        quota_bytes = domain_quota.parse_quota("quota", quota)
        change = domain_quota.set_quota(executor, domain, quota_bytes)
    return {
        "name": change.domain,
        "quota_bytes": change.new_bytes,
        "previous_quota_bytes": change.old_bytes,
        "allocated_bytes": change.allocated_bytes,
    }


def create_domain(executor: Executor, caller: Principal, name: str) -> dict[str, Any]:
    """POST /api/v1/domains (scope domains, administrators only)."""
    domain = checked("DOMAIN", names.domain, name)
    with refusals():
        caller.require_admin()
        directory.add_domain(executor, domain)
        job = jobqueue.queue(executor, jobqueue.PUBLISH_KEY, domain)
    return {"name": domain, "dkim_key": KEY_QUEUED, "job": job, "note": QUEUED_NOTE}


def remove_domain(
    executor: Executor, caller: Principal, name: str, own_domain: str
) -> dict[str, Any]:
    """DELETE /api/v1/domains/{name} (scope domains, administrators only): as `domain remove`
    without --force or --purge: refused while it has mailboxes, aliases or alias domains,
    its stored mail kept; never the stack's own domain (mailstack.yaml: domain)."""
    domain = checked("DOMAIN", names.domain, name)
    with refusals():
        caller.require_admin()
        if domain == own_domain:
            raise _own_domain(domain)
        removal = directory.remove_domain(executor, domain, kick=False)
        jobqueue.queue(executor, jobqueue.KICK_SESSIONS, f"*@{domain}")
    return {"name": removal.domain, "stored_mail": f"kept in {removal.mail_path}"}


def list_aliases(executor: Executor, caller: Principal, domain: str | None) -> dict[str, Any]:
    """GET /api/v1/aliases[?domain=D] (scope read), cut to the caller's domains."""
    only = checked("DOMAIN", names.domain, domain) if domain is not None else None
    with refusals():
        if only is not None:
            caller.require_domain(only)
        found = aliases.list_aliases(executor, only)
    return {
        "aliases": [
            {
                "source": alias.source,
                "domain": _domain_of(alias.source),
                "destinations": list(alias.destinations),
            }
            for alias in found
            if caller.may_manage(_domain_of(alias.source))
        ]
    }


def create_alias(
    executor: Executor, caller: Principal, source: str, destinations: Sequence[str]
) -> dict[str, Any]:
    """POST /api/v1/aliases (scope accounts): `alias add`'s rules and lines."""
    alias = checked("SOURCE", names.source, source)
    targets = [checked("DEST", names.address, destination) for destination in destinations]
    with refusals():
        caller.require_address(alias)
        change = aliases.add_alias(executor, alias, targets)
    return {
        "source": change.source,
        "added": list(change.added),
        "already_present": list(change.already_present),
    }


def remove_alias(
    executor: Executor, caller: Principal, source: str, destinations: Sequence[str]
) -> dict[str, Any]:
    """DELETE /api/v1/aliases/{source}[?destination=D...] (scope accounts): the named
    destinations (all or nothing), or the whole alias."""
    alias = checked("SOURCE", names.source, source)
    targets = [checked("DEST", names.address, destination) for destination in destinations]
    with refusals():
        caller.require_address(alias)
        change = aliases.remove_alias(executor, alias, targets)
    return {"source": change.source, "removed": list(change.removed)}


def _domain(domain: directory.Domain, key: jobqueue.KeyState | None) -> dict[str, Any]:
    state, detail = KEY_PUBLISHED, ""
    if key is not None and key.state in (jobqueue.PENDING, jobqueue.RUNNING):
        state = KEY_QUEUED
    elif key is not None and key.state == jobqueue.FAILED:
        state, detail = KEY_FAILED, key.reason
    return {
        "name": domain.name,
        "active": domain.active,
        "mailboxes": domain.mailboxes,
        "quota_bytes": domain.quota_bytes,
        "allocated_bytes": domain.allocated_bytes,
        "created": domain.created,
        "dkim_key": state,
        "dkim_key_detail": detail,
    }


def _domain_of(source: str) -> str:
    return source.rpartition("@")[2]


def _own_domain(domain: str) -> UsageError:
    """`domain remove`'s line for the stack's own domain."""
    return UsageError(
        f"DOMAIN: {domain} is the stack's own domain (mailstack.yaml: domain) and cannot be removed"
    )
