"""Aliases of the mail directory: a source ('local@domain', or '@domain' for a catch-all) and
the addresses its mail goes to, local or external.

Constant SQL through `psql` like the rest of the directory (mailstack.accounts.directory);
the destinations travel as one comma-joined psql variable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mailstack.accounts import names
from mailstack.accounts.addresses import split_address
from mailstack.adapters import psql
from mailstack.adapters.psql import Executor
from mailstack.errors import AlreadyExists, NotFound, UsageError

MAX_DESTINATIONS = 100


@dataclass(frozen=True)
class Alias:
    """One alias source ('local@domain', or '@domain' for a catch-all) and where it goes."""

    source: str
    destinations: tuple[str, ...]

    def __str__(self) -> str:
        kind = "  (catch-all)" if self.source.startswith("@") else ""
        return f"{self.source} -> {', '.join(self.destinations)}{kind}"


@dataclass(frozen=True)
class AliasChange:
    source: str
    added: tuple[str, ...] = ()
    already_present: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __str__(self) -> str:
        lines = [f"added alias {self.source} -> {d}" for d in self.added]
        lines += [f"alias {self.source} -> {d} already exists" for d in self.already_present]
        lines += [f"removed alias {self.source} -> {d}" for d in self.removed]
        return "\n".join(lines)


# Destinations travel as one comma-joined variable: a normalised address has no comma.
_ADD_ALIAS = """
WITH wanted AS (
    SELECT DISTINCT ON (lower(w)) w AS destination
    FROM unnest(string_to_array(:'destinations', ',')) AS w
),
added AS (
    INSERT INTO aliases (source, domain, destination)
    SELECT :'source', d.name, w.destination FROM domains d CROSS JOIN wanted w
    WHERE d.name = :'domain' AND NOT EXISTS (
        SELECT 1 FROM aliases a
        WHERE a.source = :'source' AND lower(a.destination) = lower(w.destination)
    )
    ON CONFLICT (source, destination) DO NOTHING
    RETURNING destination
)
SELECT 'domain', CASE WHEN EXISTS (SELECT 1 FROM domains WHERE name = :'domain')
    THEN 't' ELSE 'f' END
UNION ALL SELECT 'added', destination FROM added;
"""

# All or nothing: when one named destination is not there, nothing is removed.
_REMOVE_ALIAS = """
WITH wanted AS (
    SELECT DISTINCT lower(w) AS destination
    FROM unnest(string_to_array(NULLIF(:'destinations', ''), ',')) AS w
),
missing AS (
    SELECT w.destination FROM wanted w WHERE NOT EXISTS (
        SELECT 1 FROM aliases a
        WHERE a.source = :'source' AND lower(a.destination) = w.destination
    )
),
gone AS (
    DELETE FROM aliases
    WHERE source = :'source' AND NOT EXISTS (SELECT 1 FROM missing)
    AND (NOT EXISTS (SELECT 1 FROM wanted)
         OR lower(destination) IN (SELECT destination FROM wanted))
    RETURNING destination
)
SELECT 'removed', destination FROM gone
UNION ALL SELECT 'missing', destination FROM missing;
"""


def add_alias(compose: Executor, source: str, destinations: Sequence[str]) -> AliasChange:
    """source: an address or '@domain' (catch-all) of a domain of this stack.

    destinations: normalised addresses, local or external. Ones already present are kept
    and reported; it is an error only when none is new. Both checked by mailstack.accounts.names.
    """
    source = names.require("SOURCE", names.source, source)
    destinations = [names.require("DEST", names.address, dest) for dest in destinations]
    _, domain = split_address(source)
    joined = _destinations(source, destinations, required=True)
    rows = psql.query(
        compose,
        _ADD_ALIAS,
        {"source": source, "domain": domain, "destinations": joined},
    )
    if not any(row == ["domain", "t"] for row in rows):
        raise NotFound(
            f"{domain} is not a mail domain of this stack",
            hint=f"add it first: mailstack domain add {domain}",
        )
    added = tuple(row[1] for row in rows if row[0] == "added")
    added_lower = {destination.lower() for destination in added}
    already: list[str] = []
    for destination in destinations:
        lowered = destination.lower()
        if lowered not in added_lower and destination not in already:
            already.append(destination)
    if not added:
        shown = ", ".join(already)
        raise AlreadyExists(f"alias {source} -> {shown} already exists")
    return AliasChange(source, added=added, already_present=tuple(already))


def list_aliases(compose: Executor, domain: str | None = None) -> list[Alias]:
    rows = psql.query(
        compose,
        "SELECT source, destination FROM aliases "
        "WHERE :'domain' = '' OR domain = :'domain' ORDER BY source, destination;",
        {"domain": domain or ""},
    )
    grouped: dict[str, list[str]] = {}
    for source, destination in rows:
        grouped.setdefault(source, []).append(destination)
    return [Alias(source, tuple(targets)) for source, targets in grouped.items()]


def remove_alias(compose: Executor, source: str, destinations: Sequence[str] = ()) -> AliasChange:
    """Remove the named destinations of an alias (all or nothing), or the whole alias."""
    source = source.lower()
    split_address(source)
    joined = _destinations(source, destinations, required=False)
    rows = psql.query(compose, _REMOVE_ALIAS, {"source": source, "destinations": joined})
    missing = [row[1] for row in rows if row[0] == "missing"]
    if missing:
        raise NotFound(
            f"alias {source} has no destination {', '.join(missing)}; nothing was removed",
            hint="see mailstack alias list",
        )
    removed = tuple(row[1] for row in rows if row[0] == "removed")
    if not removed:
        raise NotFound(f"no alias {source}", hint="see mailstack alias list")
    return AliasChange(source, removed=removed)


def _destinations(source: str, destinations: Sequence[str], *, required: bool) -> str:
    if required and not destinations:
        raise UsageError(f"alias {source}: give at least one destination")
    if len(destinations) > MAX_DESTINATIONS:
        raise UsageError(f"alias {source}: at most {MAX_DESTINATIONS} destinations at once")
    for destination in destinations:
        local_part, separator, domain = destination.rpartition("@")
        if not separator or not local_part or not domain or "," in destination:
            raise UsageError(f"{destination!r} is not a mail address (local@domain)")
        if destination.lower() == source:
            raise UsageError(f"alias {source} cannot point to itself")
    return ",".join(destinations)
