"""A domain's total quota (issue 16: quotas "within a domain quota").

An administrator gives a domain a total (domains.quota_bytes; 0: none). With one, the sum
of the domain's mailboxes' quotas stays within it, and none of them is unlimited (a
mailbox without a quota could fill the disk the total is meant to bound). The rule holds
for every writer of a mailbox's quota through the core (the CLI, the API, the web admin):
accounts.directory's add_mailbox and set_mailbox_quota run its SQL, and set_quota here
refuses a total below what the mailboxes already hold.

The rule is checked in the statement that writes, after LOCK_DOMAIN took the domain's row
in an earlier statement of the same transaction: two parallel adds wait for each other,
and the second one's sum (a new snapshot, READ COMMITTED) sees the first one's mailbox. A
lock inside the writing statement itself would not do: its snapshot predates the wait.

Refusals are one line with the figures; the SQL's own answer gives them, and
mailbox_refusal (pure) words them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import InUse, MailstackError, NotFound, UsageError
from mailstack.units import MAX_QUOTA_BYTES, human_size, parse_size

if TYPE_CHECKING:  # accounts.directory imports this module
    from mailstack.accounts.directory import Domain

# The first statement of every write that the rule bounds (single_transaction): the
# domain's row stays locked until the transaction ends.
LOCK_DOMAIN = "SELECT 'locked', name FROM domains WHERE name = :'domain' FOR UPDATE;\n"
RAISE_HINT = "an administrator may raise the domain quota: mailstack domain quota {domain} SIZE"
NONE = "none"


class OverDomainQuota(InUse):
    """A quota the domain's total leaves no room for: a conflict with what its mailboxes
    already hold (the REST API answers 409, as for InUse)."""


@dataclass(frozen=True)
class DomainQuota:
    domain: str
    quota_bytes: int  # 0: no domain quota
    allocated_bytes: int  # the sum of its mailboxes' quotas
    mailboxes: int
    unlimited: int  # mailboxes without a quota of their own

    def __str__(self) -> str:
        allocated = f"{human_size(self.allocated_bytes)} allocated to {self.mailboxes} mailbox(es)"
        if not self.quota_bytes:
            return f"{self.domain}: no domain quota; {allocated}"
        left = human_size(max(self.quota_bytes - self.allocated_bytes, 0))
        return (
            f"{self.domain}: domain quota {human_size(self.quota_bytes)}; {allocated}, {left} left"
        )


@dataclass(frozen=True)
class DomainQuotaChange:
    domain: str
    old_bytes: int
    new_bytes: int
    allocated_bytes: int

    def __str__(self) -> str:
        return (
            f"domain quota of {self.domain}: {shown(self.old_bytes)} -> {shown(self.new_bytes)} "
            f"({human_size(self.allocated_bytes)} allocated to its mailboxes)"
        )


def shown(quota_bytes: int) -> str:
    return human_size(quota_bytes) if quota_bytes else NONE


def parse_quota(argument: str, text: str) -> int:
    """A domain quota as typed: a size (2G, 500M) or none (also 0); one line otherwise."""
    if text.strip().lower() == NONE:
        return 0
    try:
        value = parse_size(text)
    except ValueError as reason:
        raise UsageError(f"{argument}: {text[:80]!r} {reason}, or none") from None
    if value > MAX_QUOTA_BYTES:
        raise UsageError(f"{argument}: {text[:80]!r} is too large")
    return value


def mailbox_refusal(
    domain: str,
    requested: int,
    domain_quota: int,
    allocated: int,
    current: int = 0,
    *,
    default: bool = False,
) -> UsageError | None:
    """Why a mailbox of `domain` may not have `requested` bytes (0: none), or None.

    allocated: the sum of the domain's mailboxes' quotas now (this one's `current` among
    them; 0 for a new mailbox). A change that lowers the allocation is never refused for
    the total (only for asking none), so a domain over its total can always come down.
    """
    if not domain_quota:
        return None
    total = allocated - current + requested
    if requested and (total <= domain_quota or requested <= current):
        return None
    left = human_size(max(domain_quota - allocated, 0))
    most = human_size(max(domain_quota - (allocated - current), 0))
    limit = f"its domain quota of {human_size(domain_quota)} ({left} left"
    limit += f", at most {most} for this mailbox)" if current else ")"
    hint = RAISE_HINT.format(domain=domain)
    if not requested:
        what = "the stack's default (mailboxes.default_quota) is none" if default else "none"
        return UsageError(
            f"quota: {what}, but a mailbox of {domain} needs a quota within {limit}; "
            "nothing was changed",
            hint=hint,
        )
    value = human_size(requested)
    if default:
        value = f"the stack's default of {value} (mailboxes.default_quota)"
    return OverDomainQuota(
        f"quota: {value} would give {domain}'s mailboxes {human_size(total)} in all, over "
        f"{limit}; nothing was changed",
        hint=hint,
    )


# Apart from directory.list_domains's statement, so that one keeps its shape for its callers.
_QUOTAS = """
SELECT 'quota', name, quota_bytes,
    (SELECT coalesce(sum(m.quota_bytes), 0) FROM mailboxes m WHERE m.domain = domains.name)
FROM domains ORDER BY name;
"""


def with_quotas(compose: Executor, domains: list[Domain]) -> list[Domain]:
    """The domains of directory.list_domains with their quota and what is allocated."""
    if not domains:
        return domains
    figures = {
        row[1]: (int(row[2]), int(row[3]))
        for row in psql.query(compose, _QUOTAS)
        if row[0] == "quota" and len(row) == 4
    }
    return [
        dataclasses.replace(
            domain,
            quota_bytes=figures.get(domain.name, (0, 0))[0],
            allocated_bytes=figures.get(domain.name, (0, 0))[1],
        )
        for domain in domains
    ]


_SHOW = """
SELECT 'quota', d.quota_bytes, coalesce(sum(m.quota_bytes), 0), count(m.address),
    count(m.address) FILTER (WHERE m.quota_bytes = 0)
FROM domains d LEFT JOIN mailboxes m ON m.domain = d.name
WHERE d.name = :'domain' GROUP BY d.name;
"""


def show_quota(compose: Executor, domain: str) -> DomainQuota:
    rows = psql.query(compose, _SHOW, {"domain": domain})
    if not rows:
        raise NotFound(f"domain {domain} does not exist")
    return DomainQuota(domain, *(int(value) for value in rows[0][1:5]))


# After LOCK_DOMAIN: the new total is written only when no mailbox is unlimited and their
# sum fits (or when it is none); the answer says which, with the figures either way.
_SET = (
    LOCK_DOMAIN  # noqa: S608  # constant text only (values are :variables)
    + """
WITH old AS (SELECT name, quota_bytes FROM domains WHERE name = :'domain'),
used AS (
    SELECT coalesce(sum(quota_bytes), 0) AS allocated,
        count(*) FILTER (WHERE quota_bytes = 0) AS unlimited
    FROM mailboxes WHERE domain = :'domain'
),
changed AS (
    UPDATE domains d SET quota_bytes = CAST(:'quota_bytes' AS bigint) FROM old, used
    WHERE d.name = old.name AND (CAST(:'quota_bytes' AS bigint) = 0
        OR (used.unlimited = 0 AND used.allocated <= CAST(:'quota_bytes' AS bigint)))
    RETURNING d.name
)
SELECT 'result', EXISTS (SELECT 1 FROM old), (SELECT count(*) FROM changed),
    coalesce((SELECT quota_bytes FROM old), 0), used.allocated, used.unlimited
FROM used;
"""
)


def set_quota(compose: Executor, domain: str, quota_bytes: int) -> DomainQuotaChange:
    """Give `domain` a total quota (0: none). Refused, with the figures, below what its
    mailboxes hold or while one of them is unlimited."""
    if not 0 <= quota_bytes <= MAX_QUOTA_BYTES:
        raise UsageError(f"quota: {quota_bytes} is out of range (0 to {MAX_QUOTA_BYTES})")
    rows = psql.query(
        compose,
        _SET,
        {"domain": domain, "quota_bytes": str(quota_bytes)},
        single_transaction=True,
    )
    found, changed, old, allocated, unlimited = result_figures(rows, 6)
    if not found:
        raise NotFound(f"domain {domain} does not exist")
    if changed:
        return DomainQuotaChange(domain, old, quota_bytes, allocated)
    value = human_size(quota_bytes)
    if unlimited:
        raise OverDomainQuota(
            f"quota: {value} cannot bound {domain}: {unlimited} of its mailboxes have no quota "
            "(unlimited); nothing was changed",
            hint="give each a quota first: mailstack mailbox quota ADDRESS SIZE",
        )
    raise OverDomainQuota(
        f"quota: {value} is below the {human_size(allocated)} {domain}'s mailboxes already "
        f"hold; give at least {human_size(allocated)}, or lower their quotas first; "
        "nothing was changed"
    )


# The last statement but one of `accounts import` (accounts.sync, under its table locks):
# whatever the file says, the transaction fails rather than leave a domain over its quota.
# import_refusal says why first, in one line; this holds against a change meanwhile.
IMPORT_GUARD = """
DO $guard$ BEGIN
    IF EXISTS (SELECT 1 FROM domains d WHERE d.quota_bytes > 0 AND (
        (SELECT coalesce(sum(m.quota_bytes), 0) FROM mailboxes m WHERE m.domain = d.name)
            > d.quota_bytes
        OR EXISTS (SELECT 1 FROM mailboxes m WHERE m.domain = d.name AND m.quota_bytes = 0)))
    THEN
        RAISE EXCEPTION 'a domain quota would be exceeded (mailstack domain quota)';
    END IF;
END $guard$;
"""


def import_refusal(
    source: str, domain_quotas: Mapping[str, int], mailbox_quotas: Mapping[str, int]
) -> UsageError | None:
    """Why an import's mailboxes (address -> quota) break a domain's quota, or None."""
    for domain, total in sorted(domain_quotas.items()):
        quotas = [q for a, q in mailbox_quotas.items() if a.rpartition("@")[2] == domain]
        unlimited = quotas.count(0)
        if sum(quotas) <= total and not unlimited:
            continue
        what = (
            f"{unlimited} of its mailboxes have no quota"
            if unlimited
            else f"its mailboxes' quotas come to {human_size(sum(quotas))}"
        )
        return OverDomainQuota(
            f"{source}: mailboxes: {what}, over {domain}'s domain quota of "
            f"{human_size(total)}; nothing was changed",
            hint=RAISE_HINT.format(domain=domain),
        )
    return None


def result_figures(rows: list[list[str]], width: int) -> list[int]:
    """The figures of the `'result', ...` row (booleans as 0/1); accounts.directory's
    writes under the rule answer the same way."""
    for row in rows:
        if row[0] == "result" and len(row) == width:
            return [1 if value == "t" else 0 if value == "f" else int(value) for value in row[1:]]
    raise MailstackError("unexpected answer from the database")
