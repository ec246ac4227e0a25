"""The mail directory in PostgreSQL: schema migrations, domains, mailboxes, aliases.

Everything goes through `psql` inside the running `db` container (as the postgres
superuser, over its local socket). SQL text is constant and sent on stdin; every value
travels as a psql variable (`psql -v name=value`, used as :'name'), so no value is ever
formatted into SQL. Password hashes are the one exception to "values in argv": they are
set with `\\set` on stdin (after a strict shape check) so they never show up in the host's
process list.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mailstack.errors import ExternalCommandFailed, MailstackError, UsageError
from mailstack.passwords import is_password_hash
from mailstack.resources import migrations_dir

DB_SERVICE = "db"
DATABASE = "mail"
_MIGRATION_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_VARIABLE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
# _RECORD takes the advisory lock 7246118001 ("schema migrations of mailstack"): two
# concurrent `migrate` runs apply each file once; the second fails on the version key.


class Executor(Protocol):
    """What the directory needs from mailstack.compose.Compose."""

    def exec(
        self,
        service: str,
        argv: list[str],
        *,
        input: bytes | None = None,  # mirrors Compose.exec
        user: str | None = None,
        timeout: float = 60,
    ) -> bytes: ...


@dataclass(frozen=True)
class Domain:
    name: str
    active: bool
    mailboxes: int
    created: str

    def __str__(self) -> str:
        state = "" if self.active else " (inactive)"
        return f"{self.name}{state}  {self.mailboxes} mailbox(es)"


@dataclass(frozen=True)
class Mailbox:
    address: str
    domain: str
    quota_bytes: int
    active: bool
    created: str

    def __str__(self) -> str:
        quota = "no quota" if self.quota_bytes == 0 else f"quota {self.quota_bytes} bytes"
        state = "" if self.active else " (inactive)"
        return f"{self.address}{state}  {quota}"


@dataclass(frozen=True)
class Alias:
    source: str
    destination: str
    active: bool

    def __str__(self) -> str:
        return f"{self.source} -> {self.destination}" + ("" if self.active else " (inactive)")


@dataclass(frozen=True)
class Migration:
    version: str  # "0001"
    name: str  # "0001_directory"
    path: Path

    @property
    def sql(self) -> bytes:
        return self.path.read_bytes()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql).hexdigest()


# --- building psql invocations (pure) --------------------------------------------------------


def psql_argv(variables: Mapping[str, str], *, single_transaction: bool = False) -> list[str]:
    """The psql command line: CSV output without headers, stop at the first error."""
    argv = [
        "psql",
        "--no-psqlrc",
        "--quiet",
        "--csv",
        "--tuples-only",
        "--host=/run/postgresql",
        "--username=postgres",
        f"--dbname={DATABASE}",
        "--set=ON_ERROR_STOP=1",
        "--file=-",
    ]
    if single_transaction:
        argv.append("--single-transaction")
    for name, value in sorted(variables.items()):
        argv.append(f"--set={_variable_name(name)}={_variable_value(name, value)}")
    return argv


def set_secret_variable(name: str, value: str) -> str:
    r"""A `\set` line for stdin; only for values whose shape excludes quotes and backslashes."""
    if not is_password_hash(value):
        raise UsageError("the password hash has an unexpected form; nothing was changed")
    return f"\\set {_variable_name(name)} '{value}'\n"


def parse_rows(output: bytes) -> list[list[str]]:
    """psql --csv --tuples-only output as rows of strings (NULL is the empty string)."""
    text = output.decode("utf-8")
    return [row for row in csv.reader(io.StringIO(text)) if row]


def _variable_name(name: str) -> str:
    if not _VARIABLE.match(name):
        raise ValueError(f"not a psql variable name: {name!r}")
    return name


def _variable_value(name: str, value: str) -> str:
    # Values pass through argv: refuse anything that could not be a single clean argument.
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        raise UsageError(f"{name}: {value[:80]!r} contains a control character")
    return value


def _psql(
    compose: Executor,
    sql: str,
    variables: Mapping[str, str] | None = None,
    *,
    prelude: str = "",
    single_transaction: bool = False,
    timeout: float = 60,
) -> list[list[str]]:
    argv = psql_argv(variables or {}, single_transaction=single_transaction)
    stdin = (prelude + sql).encode("utf-8")
    output = compose.exec(DB_SERVICE, argv, input=stdin, user="postgres", timeout=timeout)
    return parse_rows(output)


# --- schema migrations -----------------------------------------------------------------------

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version  text        PRIMARY KEY,
    name     text        NOT NULL,
    checksum text        NOT NULL,
    applied  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON schema_migrations FROM PUBLIC;
SELECT version, name, checksum FROM schema_migrations ORDER BY version;
"""

_RECORD = """
SELECT pg_advisory_xact_lock(7246118001);
-- Fails (and rolls the whole file back) if another run applied this version meanwhile.
INSERT INTO schema_migrations (version, name, checksum)
    VALUES (:'migration_version', :'migration_name', :'migration_checksum');
"""


def available_migrations(directory: Path | None = None) -> list[Migration]:
    """The shipped migration files, in version order; a malformed name is a packaging bug."""
    root = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(root.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise MailstackError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(match["version"], path.stem, path))
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise MailstackError("two migration files share a version number")
    return found


def pending_migrations(
    available: Sequence[Migration], applied: Mapping[str, str]
) -> list[Migration]:
    """Migrations not yet applied; an applied file whose content changed is an error."""
    for migration in available:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise MailstackError(
                f"schema migration {migration.name} was changed after it was applied",
                hint="released migrations are immutable; add a new NNNN_*.sql file instead",
            )
    return [migration for migration in available if migration.version not in applied]


def migrate(compose: Executor, directory: Path | None = None) -> list[str]:
    """Apply every pending migration, each in one transaction; return the applied names."""
    rows = _psql(compose, _BOOTSTRAP)
    applied = {row[0]: row[2] for row in rows}
    done: list[str] = []
    for migration in pending_migrations(available_migrations(directory), applied):
        variables = {
            "migration_version": migration.version,
            "migration_name": migration.name,
            "migration_checksum": migration.checksum,
        }
        try:
            _psql(
                compose,
                migration.sql.decode("utf-8"),
                variables,
                prelude=_RECORD,
                single_transaction=True,
                timeout=300,
            )
        except ExternalCommandFailed as e:
            raise ExternalCommandFailed(
                f"schema migration {migration.name} (rolled back, nothing of it applied)",
                e.output,
                hint="the database is as before; see the error above",
            ) from None
        done.append(migration.name)
    return done


def applied_migrations(compose: Executor) -> list[str]:
    """Names of the applied migrations (for `status`)."""
    rows = _psql(compose, "SELECT name FROM schema_migrations ORDER BY version;")
    return [row[0] for row in rows]


# --- domains ---------------------------------------------------------------------------------


def add_domain(compose: Executor, name: str) -> None:
    """Add a mail domain (already normalised by config.normalize_domain)."""
    rows = _psql(
        compose,
        "INSERT INTO domains (name) VALUES (:'domain') ON CONFLICT (name) DO NOTHING "
        "RETURNING name;",
        {"domain": name},
    )
    if not rows:
        raise UsageError(f"domain {name} already exists")


def list_domains(compose: Executor) -> list[Domain]:
    rows = _psql(
        compose,
        "SELECT d.name, d.active, count(m.address), to_char(d.created AT TIME ZONE 'UTC', "
        '\'YYYY-MM-DD"T"HH24:MI:SS"Z"\') FROM domains d '
        "LEFT JOIN mailboxes m ON m.domain = d.name "
        "GROUP BY d.name ORDER BY d.name;",
    )
    return [Domain(row[0], row[1] == "t", int(row[2]), row[3]) for row in rows]


def remove_domain(compose: Executor, name: str) -> None:
    """Remove a domain that has no mailboxes and no aliases left."""
    rows = _psql(
        compose,
        "WITH gone AS (DELETE FROM domains WHERE name = :'domain' "
        "AND NOT EXISTS (SELECT 1 FROM mailboxes WHERE domain = :'domain') "
        "AND NOT EXISTS (SELECT 1 FROM aliases WHERE domain = :'domain') RETURNING name) "
        "SELECT (SELECT count(*) FROM gone), "
        "EXISTS (SELECT 1 FROM domains WHERE name = :'domain');",
        {"domain": name},
    )
    removed, existed = _counts(rows)
    if removed:
        return
    if not existed:
        raise UsageError(f"domain {name} does not exist")
    raise UsageError(
        f"domain {name} still has mailboxes or aliases",
        hint="remove them first (mailstack mailbox list, mailstack alias list)",
    )


# --- mailboxes -------------------------------------------------------------------------------


def add_mailbox(compose: Executor, address: str, password_hash: str, quota_bytes: int) -> None:
    """Add a mailbox (address normalised by config.normalize_address; hash from passwords)."""
    local_part, domain = _split(address)
    rows = _psql(
        compose,
        "WITH added AS (INSERT INTO mailboxes (address, local_part, domain, password, "
        "quota_bytes) SELECT :'address', :'local_part', d.name, :'password_hash', "
        "CAST(:'quota_bytes' AS bigint) FROM domains d WHERE d.name = :'domain' "
        "ON CONFLICT (address) DO NOTHING RETURNING address) "
        "SELECT (SELECT count(*) FROM added), "
        "EXISTS (SELECT 1 FROM domains WHERE name = :'domain');",
        {
            "address": address.lower(),
            "local_part": local_part,
            "domain": domain,
            "quota_bytes": _quota(quota_bytes),
        },
        prelude=set_secret_variable("password_hash", password_hash),
    )
    added, domain_exists = _counts(rows)
    if added:
        return
    if not domain_exists:
        raise UsageError(
            f"{domain} is not a mail domain of this stack",
            hint=f"add it first: mailstack domain add {domain}",
        )
    raise UsageError(f"mailbox {address.lower()} already exists")


def list_mailboxes(compose: Executor, domain: str | None = None) -> list[Mailbox]:
    rows = _psql(
        compose,
        "SELECT address, domain, quota_bytes, active, to_char(created AT TIME ZONE 'UTC', "
        '\'YYYY-MM-DD"T"HH24:MI:SS"Z"\') FROM mailboxes '
        "WHERE :'domain' = '' OR domain = :'domain' ORDER BY domain, local_part;",
        {"domain": domain or ""},
    )
    return [Mailbox(row[0], row[1], int(row[2]), row[3] == "t", row[4]) for row in rows]


def set_mailbox_password(compose: Executor, address: str, password_hash: str) -> None:
    rows = _psql(
        compose,
        "UPDATE mailboxes SET password = :'password_hash' WHERE address = :'address' "
        "RETURNING address;",
        {"address": address.lower()},
        prelude=set_secret_variable("password_hash", password_hash),
    )
    if not rows:
        raise UsageError(f"mailbox {address.lower()} does not exist")


def remove_mailbox(compose: Executor, address: str) -> None:
    """Remove a mailbox from the directory (its stored mail is left on the volume)."""
    rows = _psql(
        compose,
        "DELETE FROM mailboxes WHERE address = :'address' RETURNING address;",
        {"address": address.lower()},
    )
    if not rows:
        raise UsageError(f"mailbox {address.lower()} does not exist")


# --- aliases ---------------------------------------------------------------------------------


def add_alias(compose: Executor, source: str, destination: str) -> None:
    """source: an address or '@domain' (catch-all) of a domain of this stack."""
    _, domain = _split(source)
    rows = _psql(
        compose,
        "WITH added AS (INSERT INTO aliases (source, domain, destination) "
        "SELECT :'source', d.name, :'destination' FROM domains d WHERE d.name = :'domain' "
        "ON CONFLICT (source, destination) DO NOTHING RETURNING id) "
        "SELECT (SELECT count(*) FROM added), "
        "EXISTS (SELECT 1 FROM domains WHERE name = :'domain');",
        {"source": source.lower(), "domain": domain, "destination": destination},
    )
    added, domain_exists = _counts(rows)
    if added:
        return
    if not domain_exists:
        raise UsageError(
            f"{domain} is not a mail domain of this stack",
            hint=f"add it first: mailstack domain add {domain}",
        )
    raise UsageError(f"alias {source.lower()} -> {destination} already exists")


def list_aliases(compose: Executor) -> list[Alias]:
    rows = _psql(
        compose, "SELECT source, destination, active FROM aliases ORDER BY source, destination;"
    )
    return [Alias(row[0], row[1], row[2] == "t") for row in rows]


def remove_alias(compose: Executor, source: str, destination: str | None = None) -> int:
    """Remove one destination of an alias, or all of them; return how many rows went."""
    rows = _psql(
        compose,
        "WITH gone AS (DELETE FROM aliases WHERE source = :'source' "
        "AND (:'destination' = '' OR destination = :'destination') RETURNING id) "
        "SELECT count(*) FROM gone;",
        {"source": source.lower(), "destination": destination or ""},
    )
    removed = int(rows[0][0]) if rows else 0
    if not removed:
        raise UsageError(
            f"no alias {source.lower()}" + (f" -> {destination}" if destination else "")
        )
    return removed


# --- helpers ---------------------------------------------------------------------------------


def _split(address: str) -> tuple[str, str]:
    local_part, separator, domain = address.lower().rpartition("@")
    if not separator or not domain:
        raise UsageError(f"{address!r} is not a mail address (local@domain)")
    return local_part, domain


def _quota(quota_bytes: int) -> str:
    if quota_bytes < 0:
        raise UsageError("the quota cannot be negative")
    return str(quota_bytes)


def _counts(rows: list[list[str]]) -> tuple[int, bool]:
    """Rows of `SELECT <count>, <exists>` as (count, exists)."""
    if not rows or len(rows[0]) != 2:
        raise MailstackError("unexpected answer from the database")
    return int(rows[0][0]), rows[0][1] == "t"
