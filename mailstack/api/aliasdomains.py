"""The REST API's alias domains and sender grants (/api/v1/alias-domains, /api/v1/senders),
framework-free like mailstack.api.operations, whose rules they follow: the CLI's checks
first, then the caller's principal, then the core (accounts.alias_domains, accounts.access:
the same rules, SQL and lines as `mailstack domain alias` and `mailstack alias sender`).

Who may touch what (identity.principal decides every case):

- An alias domain belongs to whoever manages its target: it is listed, and removed, by
  them. Adding one needs both sides: the target one of the caller's domains, and the new
  name one it may bring in (Principal.require_new_name: its own domain or a name under
  one; a domain administrator claiming gmail.com would take every local user's mail to
  gmail.com). A name that is already another's (a mail domain, or an alias domain of a
  target it does not manage) gets the same 403 line as an unknown one.
- A sender grant (mailbox M may send as S, an address or @domain) needs both sides too:
  M's domain managed, and S's domain a mail domain the caller manages or an alias domain
  of one. Listings show only grants whose both sides are the caller's.

A new alias domain signs its own mail (DMARC): as `domain alias add` makes its DKIM key at
once, the API queues the same domain.publish_key host job that POST /domains does.

Loaded by the admin service on Debian's own Python: no pydantic, typer or rich.
"""

from __future__ import annotations

from typing import Any

from mailstack.accounts import access, alias_domains, directory, names
from mailstack.adapters.psql import Executor
from mailstack.api.domains import KEY_PUBLISHED, KEY_QUEUED, QUEUED_NOTE
from mailstack.api.operations import checked, refusals
from mailstack.identity.principal import Principal
from mailstack.runtime import jobqueue

# --- alias domains -----------------------------------------------------------------------------


def list_alias_domains(executor: Executor, caller: Principal) -> dict[str, Any]:
    """GET /api/v1/alias-domains (scope read): those whose target the caller manages, each
    with its DKIM key's state (as GET /domains tells it)."""
    with refusals():
        found = [
            a for a in alias_domains.list_alias_domains(executor) if caller.may_manage(a.target)
        ]
        states = jobqueue.key_states(executor) if found else {}
    return {"alias_domains": [_alias_domain(alias, states.get(alias.name)) for alias in found]}


def create_alias_domain(
    executor: Executor, caller: Principal, name: str, target: str
) -> dict[str, Any]:
    """POST /api/v1/alias-domains (scope domains): `domain alias add`'s rules and lines, the
    key queued for the host."""
    alias = checked("ALIAS_DOMAIN", names.domain, name)
    goal = checked("TARGET_DOMAIN", names.domain, target)
    with refusals():
        caller.require_domain(goal)
        caller.require_new_name(alias)
        _require_not_anothers(executor, caller, alias)
        change = alias_domains.add_alias_domain(executor, alias, goal)
        job = jobqueue.queue(executor, jobqueue.PUBLISH_KEY, change.name)
    return {
        "name": change.name,
        "target": change.target,
        "dkim_key": KEY_QUEUED,
        "job": job,
        "note": QUEUED_NOTE,
    }


def remove_alias_domain(executor: Executor, caller: Principal, name: str) -> dict[str, Any]:
    """DELETE /api/v1/alias-domains/{name} (scope domains): by whoever manages its target;
    the grants to send as its addresses go with it (the core's rule)."""
    alias = checked("ALIAS_DOMAIN", names.domain, name)
    with refusals():
        # Unknown, or another's: one line. A mail domain of the caller's own passes, and
        # the core says it is no alias domain.
        _require_owned(caller, _alias_owners(executor), alias)
        change = alias_domains.remove_alias_domain(executor, alias)
    return {"name": change.name, "target": change.target}


def _require_not_anothers(executor: Executor, caller: Principal, name: str) -> None:
    """A name the caller may claim can still be taken by another (a domain under its own,
    granted to someone else): the same 403 then, never the core's line that it exists."""
    owners = _alias_owners(executor)
    if name in owners or any(d.name == name for d in directory.list_domains(executor)):
        _require_owned(caller, owners, name)


def _alias_domain(
    alias: alias_domains.AliasDomain, key: jobqueue.KeyState | None
) -> dict[str, Any]:
    state = KEY_PUBLISHED
    if key is not None and key.state in (jobqueue.PENDING, jobqueue.RUNNING):
        state = KEY_QUEUED
    elif key is not None and key.state == jobqueue.FAILED:
        state = jobqueue.FAILED
    return {
        "name": alias.name,
        "target": alias.target,
        "created": alias.created,
        "dkim_key": state,
        "dkim_key_detail": key.reason if key is not None and state == jobqueue.FAILED else "",
    }


# --- sender grants -------------------------------------------------------------------------------


def list_senders(executor: Executor, caller: Principal, domain: str | None) -> dict[str, Any]:
    """GET /api/v1/senders[?domain=D] (scope read): grants whose sender and mailbox are both
    the caller's; D (either side's domain) must be one of them."""
    only = checked("DOMAIN", names.domain, domain) if domain is not None else None
    with refusals():
        owners = _alias_owners(executor)
        if only is not None:
            _require_owned(caller, owners, only)
        found = access.list_senders(executor, only)
    return {
        "senders": [
            _grant(grant)
            for grant in found
            if _owns_sender(caller, owners, grant.sender)
            and caller.may_manage(_domain_of(grant.login))
        ]
    }


def create_sender(
    executor: Executor, caller: Principal, sender: str, mailbox: str
) -> dict[str, Any]:
    """POST /api/v1/senders (scope accounts): `alias sender add`'s rules and lines."""
    source = checked("SENDER", names.source, sender)
    login = checked("MAILBOX", names.mailbox, mailbox)
    with refusals():
        caller.require_address(login)
        _require_sender(executor, caller, source)
        change = access.add_sender(executor, source, login)
    return {**_grant(change.permission), "added": change.changed}


def remove_sender(
    executor: Executor, caller: Principal, sender: str, mailbox: str
) -> dict[str, Any]:
    """DELETE /api/v1/senders/{sender}?mailbox=M (scope accounts)."""
    source = checked("SENDER", names.source, sender)
    login = checked("MAILBOX", names.mailbox, mailbox)
    with refusals():
        caller.require_address(login)
        _require_sender(executor, caller, source)
        change = access.remove_sender(executor, source, login)
    return _grant(change.permission)


def _require_sender(executor: Executor, caller: Principal, sender: str) -> None:
    """Forbidden unless the sender's domain is the caller's: a mail domain it manages, or an
    alias domain of one (the line of require_domain, whether that domain exists or not)."""
    _require_owned(caller, _alias_owners(executor), _domain_of(sender))


def _require_owned(caller: Principal, owners: dict[str, str], domain: str) -> None:
    """Forbidden unless `domain` is the caller's: a mail domain it manages, or an alias
    domain (owners: {alias: target}) of one. The line names `domain` itself, never the
    target of another's alias domain."""
    if not caller.may_manage(owners.get(domain, domain)):
        # An alias domain is never a mail domain (0002's trigger), so never one the caller
        # manages: this refuses. The second only if that ever broke: still a refusal.
        caller.require_domain(domain)
        caller.require_domain(owners[domain])


def _alias_owners(executor: Executor) -> dict[str, str]:
    """{alias domain: its target}: an alias domain is its target's."""
    return {a.name: a.target for a in alias_domains.list_alias_domains(executor)}


def _owns_sender(caller: Principal, owners: dict[str, str], sender: str) -> bool:
    domain = _domain_of(sender)
    return caller.may_manage(owners.get(domain, domain))


def _grant(permission: access.SenderPermission) -> dict[str, Any]:
    return {"sender": permission.sender, "mailbox": permission.login}


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2]
