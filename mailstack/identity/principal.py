"""Who acts through the admin service, and which domains they may touch (issue 16).

A principal is resolved once per request, from a web session (an administrator or a
mailbox's user) or from an API token (which acts for the administrator that created it, or
for root when `mailstack api token create` made it on the host). Every operation that names
a domain, a mailbox or an alias asks the principal first (`require_domain`), and every
listing is cut to what it may see (`visible`), so a domain administrator can neither change
nor learn of another domain: the refusal is the same whether that domain exists or not.

Loaded by the admin service on Debian's own Python: no pydantic, typer or rich.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import Forbidden, MailstackError

ADMIN = "admin"
DOMAIN_ADMIN = "domain_admin"
USER = "user"  # a mailbox's own user: self-service only


@dataclass(frozen=True)
class Principal:
    """One actor: its audit name (admin:NAME, token:NAME, mailbox:ADDRESS), its role, and
    the domains it manages (None: every domain; empty for a user)."""

    actor: str
    role: str
    domains: frozenset[str] | None

    def may_manage(self, domain: str) -> bool:
        if self.role == USER:
            return False
        return self.domains is None or domain in self.domains

    def require_domain(self, domain: str) -> None:
        """Forbidden unless this principal manages `domain` (one line, whether it exists)."""
        if not self.may_manage(domain):
            raise Forbidden(f"{domain} is not a domain you manage")

    def require_address(self, address: str) -> None:
        """The same for an address (a mailbox or an alias source): its domain decides."""
        self.require_domain(address.rpartition("@")[2])

    def require_admin(self) -> None:
        """Forbidden unless an administrator (every domain): tokens, administrators, the
        stack itself."""
        if self.role != ADMIN:
            raise Forbidden("only an administrator may do this")

    def require_new_name(self, name: str) -> None:
        """Forbidden unless this principal may bring `name` into the stack as a new alias
        domain: an administrator any name; a domain administrator only one of its domains
        or a name under one (whoever holds example.org in DNS holds shop.example.org). Any
        other name may be another's, or the world's: an alias domain gmail.com would turn
        every local user's mail to gmail.com into mail for this principal's mailboxes. The
        same line as require_domain, whether the name is known or not."""
        labels = name.split(".")
        if not any(self.may_manage(".".join(labels[i:])) for i in range(len(labels))):
            raise Forbidden(f"{name} is not a domain you manage")

    def visible(self, domains: Iterable[str]) -> list[str]:
        """The domains of `domains` this principal may see, in their order."""
        return [domain for domain in domains if self.may_manage(domain)]


# Root on the host (`mailstack api token create` without --by): every domain.
ROOT = Principal("root", ADMIN, None)


class InactiveAdmin(MailstackError):
    """The administrator a session or token acts for is gone or deactivated."""


_ADMIN = """
SELECT a.role, coalesce(string_agg(d.domain, ',' ORDER BY d.domain), '')
FROM admins a LEFT JOIN admin_domains d ON d.admin = a.name
WHERE a.name = :'name' AND a.active
GROUP BY a.role;
"""


def for_admin(executor: Executor, name: str) -> Principal:
    """The principal of an active administrator or domain administrator, read now (a grant
    revoked a moment ago is revoked for the next request)."""
    rows = psql.query(executor, _ADMIN, {"name": name})
    if not rows:
        raise InactiveAdmin(f"administrator {name} does not exist or is inactive")
    role, domains = rows[0]
    if role == ADMIN:
        return Principal(f"admin:{name}", ADMIN, None)
    return Principal(f"admin:{name}", DOMAIN_ADMIN, frozenset(filter(None, domains.split(","))))


def for_token(executor: Executor, token_name: str, created_by: str | None) -> Principal:
    """A token acts for whoever created it: root, or that administrator's current role and
    domains (the token's scopes narrow what it may do, never widen it)."""
    if created_by is None:
        return Principal(f"token:{token_name}", ADMIN, None)
    owner = for_admin(executor, created_by)
    return Principal(f"token:{token_name}", owner.role, owner.domains)


def for_user(address: str) -> Principal:
    """A mailbox's user, signed in for self-service: no domain to manage."""
    return Principal(f"mailbox:{address}", USER, frozenset())
